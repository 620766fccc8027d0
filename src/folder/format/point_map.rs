//! Where each byte of an image at one restore point lives among the files of its chain: the
//! full backup, overlaid by each diff's extents in order. Built from the diffs' records alone
//! (their payloads are never read to build it), it holds one entry per extent, so its memory
//! grows with how fragmented the chain is, never with the image's size. Reading a range then
//! asks it which file holds the newest bytes of each part ([`PointMap::pieces`]).

use std::collections::BTreeMap;
use std::ops::Range;

/// What holds one extent of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Zeros: a diff zeroed it, or the image grew past what any file wrote.
    Zero,
    /// Bytes of the chain's file number `file`, from byte `offset` of that file on.
    File { file: usize, offset: u64 },
}

impl Source {
    /// The same source, `by` bytes further into its extent.
    fn advanced(self, by: u64) -> Source {
        match self {
            Source::Zero => Source::Zero,
            Source::File { file, offset } => Source::File {
                file,
                offset: offset + by,
            },
        }
    }
}

/// One part of a read: `range` of the image comes from `source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub range: Range<u64>,
    pub source: Source,
}

/// The image at one point: its size, and its extents by start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointMap {
    size: u64,
    /// start → (end, source); the extents never overlap and cover `0..size` exactly.
    extents: BTreeMap<u64, (u64, Source)>,
}

impl PointMap {
    /// The image as a full backup holds it: file `file`, byte for byte, `size` bytes.
    pub fn full(file: usize, size: u64) -> PointMap {
        let mut extents = BTreeMap::new();
        if size > 0 {
            extents.insert(0, (size, Source::File { file, offset: 0 }));
        }
        PointMap { size, extents }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many extents it holds (what its memory grows with).
    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// The image's size changes, as a diff's size record says: what lies past a smaller size is
    /// gone, and the room a larger size adds reads as zeros.
    pub fn resize(&mut self, size: u64) {
        if size < self.size {
            self.cut(size);
            let beyond: Vec<u64> = self
                .extents
                .range(size..)
                .map(|(&start, _)| start)
                .collect();
            for start in beyond {
                self.extents.remove(&start);
            }
        } else if size > self.size {
            self.extents.insert(self.size, (size, Source::Zero));
        }
        self.size = size;
    }

    /// `range` of the image now comes from `source` (a diff's write or zero record).
    pub fn overwrite(&mut self, range: Range<u64>, source: Source) {
        let Range { start, end } = range;
        let end = end.min(self.size);
        if start >= end {
            return;
        }
        self.cut(start);
        self.cut(end);
        let covered: Vec<u64> = self.extents.range(start..end).map(|(&s, _)| s).collect();
        for covered in covered {
            self.extents.remove(&covered);
        }
        self.extents.insert(start, (end, source));
    }

    /// Splits the extent that spans `at`, so that one starts there.
    fn cut(&mut self, at: u64) {
        let Some((&start, &(end, source))) = self.extents.range(..at).next_back() else {
            return;
        };
        if end > at {
            self.extents.insert(start, (at, source));
            self.extents.insert(at, (end, source.advanced(at - start)));
        }
    }

    /// Where the bytes of `range` (within the image) come from, in order.
    pub fn pieces(&self, range: Range<u64>) -> Vec<Piece> {
        let Range { start, end } = range;
        let end = end.min(self.size);
        let mut pieces = Vec::new();
        if start >= end {
            return pieces;
        }
        let first = self
            .extents
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        for (&extent_start, &(extent_end, source)) in self.extents.range(first..end) {
            let from = extent_start.max(start);
            let to = extent_end.min(end);
            if from < to {
                pieces.push(Piece {
                    range: from..to,
                    source: source.advanced(from - extent_start),
                });
            }
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image `map` describes, with file `n`'s byte at offset `o` being `(n * 50 + o) as u8`
    /// and zeros as 0xEE, so that every source is told apart.
    fn render(map: &PointMap) -> Vec<u8> {
        let mut image = Vec::new();
        for piece in map.pieces(0..map.size()) {
            for at in piece.range.clone() {
                image.push(match piece.source.advanced(at - piece.range.start) {
                    Source::Zero => 0xEE,
                    Source::File { file, offset } => byte(file, offset),
                });
            }
        }
        image
    }

    fn byte(file: usize, offset: u64) -> u8 {
        (file as u64 * 50 + offset).to_le_bytes()[0]
    }

    /// The same, by applying each change to a plain byte vector.
    struct Model(Vec<u8>);

    impl Model {
        fn write(&mut self, range: Range<u64>, file: usize, offset: u64) {
            for (i, at) in range.enumerate() {
                let at = usize::try_from(at).unwrap();
                if at < self.0.len() {
                    self.0[at] = byte(file, offset + i as u64);
                }
            }
        }
    }

    #[test]
    fn overwrites_resizes_and_reads_agree_with_a_byte_model() {
        let mut map = PointMap::full(0, 40);
        let mut model = Model((0u8..40).collect());
        assert_eq!(render(&map), model.0);
        map.overwrite(
            10..20,
            Source::File {
                file: 1,
                offset: 100,
            },
        );
        model.write(10..20, 1, 100);
        map.overwrite(15..25, Source::Zero);
        for at in 15..25 {
            model.0[at] = 0xEE;
        }
        map.overwrite(0..5, Source::File { file: 2, offset: 7 });
        model.write(0..5, 2, 7);
        assert_eq!(render(&map), model.0);
        // Shrinking drops what lies past the end; growing adds zeros.
        map.resize(12);
        model.0.truncate(12);
        assert_eq!(render(&map), model.0);
        map.resize(30);
        model.0.resize(30, 0xEE);
        assert_eq!(render(&map), model.0);
        map.overwrite(28..40, Source::File { file: 3, offset: 0 });
        model.write(28..40, 3, 0);
        assert_eq!(render(&map), model.0);
        assert_eq!(map.size(), 30);
        // A read in the middle of extents starts and ends where asked.
        let middle = map.pieces(11..13);
        assert_eq!(
            middle,
            [
                Piece {
                    range: 11..12,
                    source: Source::File {
                        file: 1,
                        offset: 101
                    }
                },
                Piece {
                    range: 12..13,
                    source: Source::Zero
                },
            ]
        );
        assert!(map.pieces(30..31).is_empty());
        assert!(map.extent_count() <= 6, "{map:?}");
    }

    #[test]
    fn memory_follows_the_extents_not_the_size() {
        let mut map = PointMap::full(0, 1 << 40);
        for i in 0..1000u64 {
            map.overwrite(i * (1 << 30)..i * (1 << 30) + 4096, Source::Zero);
        }
        assert_eq!(map.extent_count(), 2000);
        // Writing the same extent again replaces it.
        map.overwrite(0..4096, Source::File { file: 1, offset: 0 });
        assert_eq!(map.extent_count(), 2000);
        let empty = PointMap::full(0, 0);
        assert!(empty.pieces(0..10).is_empty());
    }
}
