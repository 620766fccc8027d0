//! `parallel images = N`: up to N images backed up at once, across sections, with stdout as
//! readable as one image at a time.
//!
//! This thread first starts every section in file order (header, destination check, image list,
//! overview); the images then go into one queue that N workers empty. Each image's stdout lines
//! are collected while it runs and handed back here, where everything is printed in the order a
//! run of one image at a time prints it: a section's lines, then each of its images' lines
//! together, as soon as all that comes before them is printed. The outcome counts images in that
//! order too, so the summary reads the same.
//!
//! Nothing else changes: every image takes its own lock, recovers its own leftovers and rolls
//! back its own snapshot; a signal stops every running `rbd` at once (see [`crate::interrupt`]),
//! each running image cleans up, and the images still queued are skipped; a cluster that stops
//! answering fails the queued images on it without asking it again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{mpsc, Mutex, PoisonError};

use super::{ImageDone, RunOutcome, Section, SectionFailed, Unit};
use crate::interrupt;
use crate::out;
use crate::output::capture;

/// One piece of the run's output, in the order a sequential run prints them.
enum Piece<'a> {
    /// A section's opening lines, and its failure when it could not start.
    Section(String, Option<SectionFailed>),
    /// An image or group of section `.0`: its lines arrive from a worker.
    Unit(usize, Unit<'a>),
}

/// Runs `sections` with up to `workers` images at once; counts into `outcome`.
pub(super) fn run(sections: &[Section], workers: u32, outcome: &mut RunOutcome) {
    // Each section's opening (and its failure), and apart its image list, which its units
    // borrow.
    let mut opened: Vec<(usize, String, Option<SectionFailed>)> = Vec::new();
    let mut lists: Vec<Vec<String>> = Vec::new();
    for (index, section) in sections.iter().enumerate() {
        if interrupt::received().is_some() {
            break;
        }
        outcome.checked_only &= section.checking();
        let (started, text) = capture::stdout(|| {
            section.print_header();
            section.start()
        });
        let (images, failed) = match started {
            Ok(images) => (images, None),
            Err(failed) => (Vec::new(), Some(failed)),
        };
        opened.push((index, text, failed));
        lists.push(images);
    }
    let mut pieces = Vec::new();
    for ((index, text, failed), images) in opened.into_iter().zip(&lists) {
        pieces.push(Piece::Section(text, failed));
        let units = sections[index].units(images);
        pieces.extend(units.into_iter().map(|unit| Piece::Unit(index, unit)));
    }
    let queue: Mutex<VecDeque<(usize, usize, Unit)>> = Mutex::new(
        pieces
            .iter()
            .enumerate()
            .filter_map(|(at, piece)| match piece {
                Piece::Unit(section, unit) => Some((at, *section, *unit)),
                Piece::Section(..) => None,
            })
            .collect(),
    );
    let images = queue.lock().map_or(0, |queue| queue.len());
    let workers = usize::try_from(workers)
        .unwrap_or(usize::MAX)
        .min(images)
        .max(1);
    let mut printer = Printer {
        pieces: pieces.into_iter().map(Some).collect(),
        next: 0,
        arrived: BTreeMap::new(),
    };
    std::thread::scope(|scope| {
        let (send, receive) = mpsc::channel();
        for _ in 0..workers {
            let send = send.clone();
            let queue = &queue;
            scope.spawn(move || loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some((at, section, unit)) = next else {
                    break;
                };
                // After a signal the queued images are skipped, as in a sequential run.
                let result = if interrupt::received().is_some() {
                    None
                } else {
                    Some(capture::stdout(|| sections[section].back_up_unit(unit)))
                };
                if send.send((at, result)).is_err() {
                    break;
                }
            });
        }
        drop(send);
        printer.print_ready(outcome);
        for (at, result) in receive {
            printer.arrived.insert(at, result);
            printer.print_ready(outcome);
        }
    });
    printer.print_ready(outcome);
}

/// Prints the pieces in order as they become ready.
struct Printer<'a> {
    pieces: Vec<Option<Piece<'a>>>,
    /// The first piece not printed yet.
    next: usize,
    /// Units finished (or skipped: `None`) and not printed yet, by piece.
    arrived: BTreeMap<usize, Option<(Vec<ImageDone>, String)>>,
}

impl Printer<'_> {
    fn print_ready(&mut self, outcome: &mut RunOutcome) {
        while let Some(piece) = self.pieces.get_mut(self.next) {
            match piece.take() {
                Some(Piece::Section(text, failed)) => {
                    out!("{text}");
                    if let Some(failed) = failed {
                        outcome.absorb_section(failed);
                    }
                }
                Some(Piece::Unit(section, unit)) => match self.arrived.remove(&self.next) {
                    Some(Some((done, text))) => {
                        out!("{text}");
                        for done in done {
                            outcome.absorb(done);
                        }
                    }
                    Some(None) => {}
                    None => {
                        *piece = Some(Piece::Unit(section, unit));
                        return;
                    }
                },
                None => {}
            }
            self.next += 1;
        }
    }
}
