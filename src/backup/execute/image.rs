//! One image's run: plan in a free second, then the steps one by one (snapshots taken and
//! removed, files reused or removed, the record settled), and the snapshot this run created
//! rolled back or left when no complete file backs it.

use super::*;

pub(super) struct ImageRun<'s> {
    pub(super) section: &'s Section<'s>,
    pub(super) image: &'s str,
    /// The image's folder in the destination: every read and change of it goes through here.
    pub(super) dir: Box<dyn Door>,
    pub(super) record: ImageRecord,
    /// The snapshot this run created, until a complete file backs it.
    pub(super) unbacked_snapshot: Option<SnapName>,
    pub(super) bytes_written: u64,
    pub(super) warnings: usize,
    /// The sizes of the folder's files when the plan was made.
    pub(super) sizes: HashMap<String, u64>,
    /// What the run did, for the report.
    pub(super) done: Done,
    /// A non-file sits at the image record's name: the record is not written (the host's
    /// memory still is).
    pub(super) record_blocked: bool,
    /// The newest completed snapshot the host's memory holds for the image, as last read or
    /// written.
    pub(super) remembered: Option<Completed>,
    /// With coordination: the image's lease, renewed before every change.
    pub(super) lease: Option<Lease>,
    /// The image's lock, held from [`ImageRun::begin`] to the end of the run.
    pub(super) lock: Option<lock::ImageLock>,
    /// A group's members plan at the group's moment, so their snapshots share one name.
    pub(super) at: Option<DateTime<Utc>>,
    /// A member of a group: the group's commands run around its snapshot, not the image's.
    pub(super) grouped: bool,
}

/// What an image's run did (or, in check mode, would do), as the report tells it.
#[derive(Default)]
pub(super) struct Done {
    pub(super) files_written: Vec<FileReport>,
    pub(super) files_removed: Vec<FileReport>,
    pub(super) snapshots_created: Vec<String>,
    pub(super) snapshots_removed: Vec<String>,
    /// A full backup, a diff was exported (or shown, in check mode).
    pub(super) full: bool,
    pub(super) diff: bool,
    /// The tool's snapshots of the image when the run listed them.
    pub(super) listed_owned: Option<Vec<String>>,
}

impl<'s> ImageRun<'s> {
    pub(super) fn new(section: &'s Section<'s>, image: &'s str) -> ImageRun<'s> {
        ImageRun {
            section,
            image,
            dir: section.door(image),
            record: ImageRecord::default(),
            unbacked_snapshot: None,
            bytes_written: 0,
            warnings: 0,
            sizes: HashMap::new(),
            done: Done::default(),
            record_blocked: false,
            remembered: None,
            lease: None,
            lock: None,
            at: None,
            grouped: false,
        }
    }

    /// The image's report and what the outcome counts, once its run is over; a failure is
    /// reported on stderr here.
    pub(super) fn done(self, result: Result<()>, started: Instant) -> ImageDone {
        let section = self.section;
        let mut report = section.image_report(self.image);
        let done = self.done;
        report.action = match (&result, done.full, done.diff) {
            // Another host's image: this run did nothing to it.
            (Err(err), _, _) if err.is::<Elsewhere>() => Action::Skipped,
            (Err(_), _, _) => Action::Failed,
            (Ok(()), true, true) => Action::Slide,
            (Ok(()), true, false) => Action::Full,
            (Ok(()), false, true) => Action::Diff,
            (Ok(()), false, false) => Action::Skipped,
        };
        report.files_written = done.files_written;
        report.files_removed = done.files_removed;
        report.snapshots_kept = done.listed_owned.map(|listed| {
            let mut kept: std::collections::BTreeSet<&String> = listed.iter().collect();
            kept.extend(&done.snapshots_created);
            for removed in &done.snapshots_removed {
                kept.remove(removed);
            }
            kept.len() as u64
        });
        report.snapshots_created = done.snapshots_created;
        report.snapshots_removed = done.snapshots_removed;
        report.bytes_written = self.bytes_written;
        report.duration_seconds = seconds(started.elapsed());
        let mut busy = false;
        report.host = section
            .options
            .coordination
            .as_ref()
            .map(|c| c.host().to_string());
        let failure = match result {
            Ok(()) => {
                if section.checking() {
                    report.status = ImageStatus::Checked;
                }
                None
            }
            // Another host's in this round: not a failure of this run.
            Err(err) if err.is::<Elsewhere>() => {
                let shown = escaped(&format!("{}/{}", section.job.pool, self.image)).into_owned();
                outln!("Image {shown}: {err}");
                report.status = ImageStatus::Elsewhere;
                if let Some(elsewhere) = err.downcast_ref::<Elsewhere>() {
                    report.host = Some(elsewhere.host.clone());
                }
                None
            }
            Err(err) => {
                busy = err.downcast_ref::<lock::Busy>().is_some();
                let text = match err.downcast_ref::<interrupt::Interrupted>() {
                    Some(interrupted) => interrupted.to_string(),
                    None => section.explain(&err),
                };
                // Image names come from the cluster (`images = *`): one with a control
                // character must not forge or garble the line.
                let shown = escaped(&format!("{}/{}", section.job.pool, self.image)).into_owned();
                eprintln!("error: {shown}: {text}");
                report.status = if busy {
                    ImageStatus::Busy
                } else {
                    ImageStatus::Failed
                };
                report.error = Some(text.clone());
                Some(text)
            }
        };
        ImageDone {
            report,
            failure,
            busy,
            warnings: self.warnings,
        }
    }

    pub(super) fn pool(&self) -> &str {
        &self.section.job.pool
    }

    pub(super) fn run(&mut self) -> Result<()> {
        self.begin()?;
        let mut result = self
            .plan_in_a_free_second(None)
            .and_then(|plan| self.perform(&plan, ..));
        // A real run learns the snapshot limit only once Ceph refused its snapshot, so a steady
        // run starts no extra `rbd`; it then plans again within the limit.
        // (Check mode never creates a snapshot, so it is never refused one.)
        if at_snapshot_limit(&result) {
            let limit = self.snapshot_limit()?;
            warn!(
                "{}/{}: Ceph refused the snapshot: the image is at its snapshot limit ({}); \
                 planning again to make room first",
                self.pool(),
                self.image,
                limit.map_or_else(|| "unknown".to_string(), |l| l.to_string())
            );
            result = self
                .plan_in_a_free_second(limit)
                .and_then(|plan| self.perform(&plan, ..));
        }
        self.settle(result)
    }

    /// What comes before the plan: the name checked, the image's lock taken and, with
    /// coordination, its lease (or the host that has it, as the error).
    pub(super) fn begin(&mut self) -> Result<()> {
        naming::check_name("image", self.image).map_err(anyhow::Error::msg)?;
        // Listed names were checked when the configuration loaded; `images = *` finds its here,
        // before any snapshot is taken for a file that could not be written.
        let diffs = self.section.job.mode == BackupMode::Incremental;
        naming::check_name_length(self.image, diffs, self.section.job.encrypt_to.is_some())
            .map_err(anyhow::Error::msg)?;
        let options = self.section.options;
        let kind = if self.section.checking() {
            lock::Kind::Shared
        } else {
            lock::Kind::Exclusive
        };
        self.lock = Some(lock::lock_image(
            &options.lock_dir,
            self.pool(),
            self.image,
            kind,
            Instant::now() + options.wait,
        )?);
        if let (Some(coordination), false) = (&options.coordination, self.section.checking()) {
            match coordination.take_image(self.pool(), self.image, options.lease_wait)? {
                Ok(lease) => self.lease = Some(lease),
                // The holder may only be looking at what a third host completed in this round:
                // that host is the one that backed it up.
                Err(held) => return Err(self.completed_this_round()?.unwrap_or(held).into()),
            }
            if let Some(done) = self.completed_this_round()? {
                return Err(done.into());
            }
        }
        Ok(())
    }

    /// Ends a run that began: the snapshot it created and no complete file backs is rolled
    /// back (or left for the next run, when the cluster stopped answering), and a failure the
    /// signal caused is reported as the interruption.
    pub(super) fn settle(&mut self, result: Result<()>) -> Result<()> {
        match &result {
            // Removing it would cost another timeout of a cluster that has stopped answering
            // (or refuses us); the image record names it, so the next run removes it.
            Err(err) if cluster_failed(err) => self.leave_snapshot(),
            Err(_) => self.roll_back_snapshot(),
            Ok(()) => {}
        }
        // A failure caused by the signal (a killed rbd) is reported as the interruption.
        match (result, interrupt::check()) {
            (Err(_), Err(interrupted)) => Err(interrupted.into()),
            (result, _) => result,
        }
    }

    /// Plans the image's run. When the snapshot name of this second is taken (a run of the
    /// image finished within it: two runs in a row from a script, or the run this one waited
    /// for), waits for the next second and plans again from what is there then.
    pub(super) fn plan_in_a_free_second(&mut self, limit: Option<u64>) -> Result<Plan> {
        let mut tries = 0;
        loop {
            match self.plan(limit) {
                Err(err) if tries < SAME_SECOND_TRIES && err.is::<SnapshotExists>() => {
                    tries += 1;
                    info!(
                        "{}/{}: {err}; waiting for the next second",
                        self.pool(),
                        self.image
                    );
                    interrupt::check()?;
                    self.section.sleep_to_the_next_second();
                }
                other => return other,
            }
        }
    }

    pub(super) fn snapshot_limit(&self) -> Result<Option<u64>> {
        self.section.rbd.snapshot_limit(self.pool(), self.image)
    }

    /// The plan for this run, within the image's snapshot limit when it is known: `limit` in a
    /// real run, asked of the cluster in check mode (which cannot learn it from a refused
    /// snapshot) and for a group's member.
    pub(super) fn plan(&mut self, limit: Option<u64>) -> Result<Plan> {
        let snapshots = self
            .section
            .rbd
            .list_snapshots(self.pool(), self.image)
            .context("cannot list snapshots")?;
        // A group member's snapshot cannot be planned again once refused (its group was frozen
        // for that moment only), so it plans within the limit from the start.
        let limit = if self.section.checking() || self.grouped {
            self.snapshot_limit()?
        } else {
            limit
        };
        self.done.listed_owned = Some(
            snapshots
                .iter()
                .filter(|s| SnapName::is_owned(&s.name))
                .map(|s| s.name.clone())
                .collect(),
        );
        let entries = self.dir.list()?;
        self.sizes = entries
            .iter()
            .map(|entry| (entry.name.clone(), entry.size))
            .collect();
        let destination = self.destination()?;
        let state = destination.state();
        let key = state.and_then(|state| state.key());
        self.record =
            match record::read_image_record(self.dir.as_ref(), self.pool(), self.image, key) {
                Ok(record) => record,
                Err(unusable) if unusable.not_a_file => {
                    let kind = (self.dir.kind_of(naming::IMAGE_RECORD))
                        .map_or("not a regular file", EntryKind::described);
                    let blocked = Blocked {
                        path: unusable.path,
                        kind,
                    };
                    warn!("{}/{}: {blocked}", self.pool(), self.image);
                    self.warnings += 1;
                    self.record_blocked = true;
                    ImageRecord::default()
                }
                Err(unusable) => {
                    warn!("{}/{}: {unusable}", self.pool(), self.image);
                    self.warnings += 1;
                    ImageRecord::default()
                }
            };
        // What this destination completed last, when its record no longer says (shipped with
        // the files, or not believed): the host's memory continues the chain from there.
        if let (Some(state), Ok(ready)) = (state, &destination.decision) {
            if ready.trust_memory {
                match state.newest_completed(
                    &self.section.job.destination,
                    &ready.id,
                    self.pool(),
                    self.image,
                ) {
                    Ok(remembered) => self.remembered = remembered,
                    Err(err) => {
                        warn!("{}/{}: {err:#}", self.pool(), self.image);
                        self.warnings += 1;
                    }
                }
                if self.record.newest.is_none() {
                    self.record.newest.clone_from(&self.remembered);
                }
            }
        }
        let found = Found {
            image: self.image,
            snapshots: &snapshots,
            entries: &entries,
            record: &self.record,
        };
        // What only a local folder can do (build a new base in place) is asked of the door.
        let settings = self.section.settings.for_folder(self.dir.builds_in_place());
        let now = self.at.unwrap_or_else(|| (self.section.options.now)());
        let plan = plan_image(&settings, &found, now)?;
        Ok(snap_limit::fit(plan, snapshots.len(), limit)?)
    }

    /// Carries out the plan's steps in `part`, in order (all of them, or a group member's part).
    pub(super) fn perform(
        &mut self,
        plan: &Plan,
        part: impl std::slice::SliceIndex<[Step], Output = [Step]>,
    ) -> Result<()> {
        self.take_back_unfinished_uploads()?;
        for step in &plan.steps[part] {
            interrupt::check()?;
            self.keep_lease()?;
            self.step(step, &plan.snapshot)?;
        }
        Ok(())
    }

    /// With coordination: renews the image's lease now, so that what follows is done while no
    /// other host may have taken the image over; fails once the lease lapsed.
    pub(super) fn keep_lease(&self) -> Result<()> {
        match &self.lease {
            Some(lease) => lease.confirm(),
            None => Ok(()),
        }
    }

    /// With coordination: the host that completed this image's backup in this run's round
    /// already (its lease was released when it finished), if one did.
    fn completed_this_round(&self) -> Result<Option<Elsewhere>> {
        let Some(state) = self.destination()?.state() else {
            return Ok(None);
        };
        let done = state.completed_by(&self.section.job.destination, self.pool(), self.image)?;
        Ok(done.filter(|done| done.this_round).map(|done| Elsewhere {
            host: done.host,
            in_progress: false,
        }))
    }

    /// Aborts the uploads the record names, which a killed run left unfinished (only those:
    /// another writer's uploads in the bucket are not this run's to judge).
    fn take_back_unfinished_uploads(&mut self) -> Result<()> {
        for upload in self.record.uploads.clone() {
            info!(
                "{}/{}: aborting the unfinished upload of {} that an interrupted run left",
                self.pool(),
                self.image,
                escaped(&upload.file)
            );
            self.dir.abandon(&upload.file, &upload.id)?;
            self.record.upload_ended(&upload.id);
            self.save_record()?;
        }
        Ok(())
    }

    pub(super) fn step(&mut self, step: &Step, new_snapshot: &SnapName) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        match step {
            Step::CreateSnapshot {
                snap,
                backs,
                temporary,
            } => self.create_snapshot(snap, backs, *temporary)?,
            Step::Export { file, reason } => {
                info!("{pool}/{image}: {}: {reason}", file.file_name(image));
                self.export(file, false)?;
                if file.snap == *new_snapshot {
                    self.unbacked_snapshot = None;
                }
            }
            Step::SlideBase {
                file,
                from,
                diffs,
                reason,
            } => {
                info!("{pool}/{image}: {}: {reason}", file.file_name(image));
                self.build_base(file, from, diffs)?;
            }
            Step::Reuse { file, reason } => self.reuse(file, reason)?,
            Step::RemoveFile { name, reason } => {
                outln!("Removing file {}", self.dir.location_of(name).display());
                info!("{pool}/{image}: removing {name}: {reason}");
                if self.dir.remove(name)? {
                    self.done.files_removed.push(FileReport {
                        file: name.clone(),
                        bytes: self.sizes.get(name).copied(),
                    });
                }
            }
            Step::RemoveSnapshot { snap, reason } => {
                outln!(
                    "Deleting snapshot {}",
                    spec(&pool, image, Some(snap.as_str()))
                );
                info!("{pool}/{image}: removing snapshot {snap}: {reason}");
                self.remove_snapshot(snap)?;
            }
            Step::SettleRecord {
                snap,
                completed,
                reason,
            } => {
                info!("{pool}/{image}: forgetting the pending snapshot {snap}: {reason}");
                self.settle_record(snap, completed.as_ref())?;
            }
            Step::UnexpectedFile { name } => {
                outln!(
                    "WARNING: unexpected file in {}: {name}",
                    self.dir.location().display()
                );
            }
            Step::UnparseableSnapshot { name } => {
                warn!("{pool}/{image}: snapshot {name} has the BACKUP prefix but no timestamp the tool can read; left alone");
            }
        }
        Ok(())
    }

    /// Takes the run's snapshot, its intent recorded first: if this run dies, the next one knows
    /// the snapshot is its own leftover.
    pub(super) fn take_snapshot(
        &mut self,
        snap: &SnapName,
        backs: &BackupFile,
        temporary: bool,
    ) -> Result<()> {
        let rbd = &self.section.rbd;
        let (pool, image) = (self.pool().to_string(), self.image);
        let shown = rbd.show(
            &pool,
            image,
            Op::CreateSnapshot {
                snap: snap.as_str(),
            },
        );
        outln!("# {shown}");
        self.dir.create()?;
        let at = (self.section.options.now)();
        self.record
            .snapshot_planned(snap.as_str(), &backs.file_name(image), temporary, at);
        self.save_record()?;
        match rbd.create_snapshot(&pool, image, snap.as_str()) {
            Ok(Change::Applied) => {
                self.done.snapshots_created.push(snap.to_string());
                self.unbacked_snapshot = Some(snap.clone());
            }
            // Check mode: no snapshot, so none to report or roll back.
            Ok(Change::Skipped) => {}
            Err(err) => {
                self.settle_failed_snapshot(snap, err.kind())?;
                return Err(err.into());
            }
        }
        Ok(())
    }

    /// After `rbd snap create` failed: makes the image record and the roll-back agree with what
    /// the cluster holds, so that no snapshot of this run outlives it unnamed.
    fn settle_failed_snapshot(&mut self, snap: &SnapName, kind: FailureKind) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let created = match kind {
            // The cluster may have made it before going silent, and asking would cost another
            // timeout: the record keeps the intent, and the next run removes the snapshot.
            FailureKind::TimedOut => return Ok(()),
            // An `rbd` that ended without a reason (stopped by a signal, or crashed) may have
            // ended after the cluster made the snapshot: only the cluster can say.
            FailureKind::Other => match self.section.rbd.list_snapshots(&pool, image) {
                Ok(snapshots) => snapshots.iter().any(|s| s.name == snap.as_str()),
                Err(err) => {
                    info!(
                        "{pool}/{image}: cannot tell whether snapshot {snap} was made ({err:#}); \
                         its record keeps it for the next run to remove"
                    );
                    return Ok(());
                }
            },
            // Refused: it existed already (not ours) or was never made.
            _ => false,
        };
        if created {
            // Planned as new (its name was free), so it is this run's, and rolled back with it.
            self.done.snapshots_created.push(snap.to_string());
            self.unbacked_snapshot = Some(snap.clone());
        } else if self.record.snapshot_gone(snap.as_str()) {
            // Forget the intent, so that no later run removes a snapshot on its account.
            self.save_record()?;
        }
        Ok(())
    }

    /// Keeps a file the plan reuses, unless it cannot be proven: then it is written again.
    pub(super) fn reuse(&mut self, file: &BackupFile, reason: &str) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let name = file.file_name(image);
        match self.proof_of(file)? {
            None => info!("{pool}/{image}: keeping {name}: {reason}"),
            Some(doubt) => {
                warn!(
                    "{pool}/{image}: {name} is not reused: {doubt}; writing it again from \
                     snapshot {}",
                    file.snap
                );
                self.export(file, true)?;
            }
        }
        Ok(())
    }

    /// Records what became of a pending snapshot: its file completed, or the snapshot gone.
    pub(super) fn settle_record(
        &mut self,
        snap: &str,
        completed: Option<&BackupFile>,
    ) -> Result<()> {
        match completed {
            Some(file) => self
                .record
                .file_completed(&file.snap, &file.file_name(self.image)),
            None => {
                self.record.snapshot_gone(snap);
            }
        }
        self.save_record()
    }

    /// Removes a snapshot and, once it is gone, forgets any pending record of it. A snapshot that
    /// cannot go (protected, or with clones) costs disk space in the cluster, not a backup: it is
    /// reported and the run carries on.
    pub(super) fn remove_snapshot(&mut self, snap: &SnapName) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let rbd = &self.section.rbd;
        let shown = rbd.show(
            &pool,
            image,
            Op::RemoveSnapshot {
                snap: snap.as_str(),
            },
        );
        outln!("# {shown}");
        match rbd.remove_snapshot(&pool, image, snap.as_str()) {
            Ok(Change::Applied) => self.done.snapshots_removed.push(snap.to_string()),
            // Check mode: the snapshot and its record stay as they are.
            Ok(Change::Skipped) => return Ok(()),
            Err(err) if err.kind() == FailureKind::NotFound => {
                info!("{pool}/{image}: snapshot {snap} was gone already");
            }
            Err(err) if err.kind() == FailureKind::TimedOut => return Err(err.into()),
            Err(err) => {
                warn!("{pool}/{image}: snapshot {snap} left in place: {err}");
                self.warnings += 1;
                return Ok(());
            }
        }
        if self.unbacked_snapshot.as_ref() == Some(snap) {
            self.unbacked_snapshot = None;
        }
        if self.record.snapshot_gone(snap.as_str()) {
            self.save_record()?;
        }
        Ok(())
    }

    pub(super) fn destination(&self) -> Result<&'s DestinationUse> {
        self.section
            .destination
            .get()
            .map(|share| &**share)
            .context("internal error: the destination was not decided")
    }

    /// Writes the image record (unless a non-file sits at its name) and, when the newest
    /// completed snapshot changed, the host's memory of it: both at the moment a file completes.
    pub(super) fn save_record(&mut self) -> Result<()> {
        // The record is the image's: only the lease holder writes it.
        self.keep_lease()?;
        let destination = self.destination()?;
        let (Some(state), Ok(ready)) = (destination.state(), &destination.decision) else {
            bail!("internal error: a record written for a destination that was refused");
        };
        // A real run without a key fails there (its snapshots would go unrecorded); check
        // mode's notes go on without one, as its door would keep no record anyway.
        let notes = self.section.notes(state);
        let key = notes.record_key()?;
        if let (false, Some(key)) = (self.record_blocked, key) {
            let written =
                record::write_image_record(&*self.dir, self.pool(), self.image, &self.record, key);
            match written {
                Ok(()) => {}
                Err(err) if err.downcast_ref::<Blocked>().is_some() => {
                    warn!("{}/{}: {err:#}", self.pool(), self.image);
                    self.warnings += 1;
                    self.record_blocked = true;
                }
                Err(err) => return Err(err),
            }
        }
        if self.record.newest.is_some() && self.record.newest != self.remembered {
            if let Some(newest) = &self.record.newest {
                // The file is complete and the image record says so: a host that cannot note it
                // loses only the chance to continue after the files are shipped.
                let noted = notes.image_completed(
                    &self.section.job.destination,
                    &ready.id,
                    self.pool(),
                    self.image,
                    newest,
                    (self.section.options.now)(),
                );
                match noted {
                    Ok(()) => self.remembered.clone_from(&self.record.newest),
                    Err(err) => {
                        warn!("{}/{}: {err:#}", self.pool(), self.image);
                        self.warnings += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// The snapshot this run created, which no complete file backs, stays for the next run to
    /// remove (its image record names it).
    pub(super) fn leave_snapshot(&mut self) {
        if let Some(snap) = self.unbacked_snapshot.take() {
            info!(
                "{}/{}: snapshot {snap}, created by this run, is left for the next run to remove",
                self.pool(),
                self.image
            );
        }
    }

    /// Removes the snapshot this run created when no complete file backs it, so it cannot become
    /// the base of a diff that nothing could restore. If even that fails, the image record still
    /// names it and the next run removes it.
    pub(super) fn roll_back_snapshot(&mut self) {
        let Some(snap) = self.unbacked_snapshot.take() else {
            return;
        };
        let (pool, image) = (self.pool().to_string(), self.image);
        warn!("{pool}/{image}: removing snapshot {snap}, created by this run, because its backup did not complete");
        match self
            .section
            .rbd
            .remove_snapshot(&pool, image, snap.as_str())
        {
            Ok(Change::Applied) => self.done.snapshots_removed.push(snap.to_string()),
            Ok(Change::Skipped) => return,
            Err(err) if err.kind() == FailureKind::NotFound => {}
            Err(err) => {
                warn!(
                    "{pool}/{image}: could not remove snapshot {snap} (the next run will): {err}"
                );
                return;
            }
        }
        // A lost lease leaves the record to the host that took the image over.
        if self.lease.as_ref().is_some_and(Lease::lost) {
            return;
        }
        if self.record.snapshot_gone(snap.as_str()) {
            if let Err(err) = self.save_record() {
                warn!("{pool}/{image}: {err:#}");
            }
        }
    }
}
