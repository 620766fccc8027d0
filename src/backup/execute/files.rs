//! How one image's run writes its files: an export streamed into the folder and published with
//! its checksum first, a new base built from the folder (the slide) or its fallback, and the
//! proof of a file it would reuse.

use super::*;
use crate::folder::format::encrypt::Recipients;

impl ImageRun<'_> {
    /// Why an existing file may not be relied on (`None` when its checksum file exists and
    /// matches and its length is the snapshot's size). Reading it is safe in check mode too.
    pub(super) fn proof_of(&self, file: &BackupFile) -> Result<Option<String>> {
        let (pool, image) = (self.pool(), self.image);
        let name = file.file_name(image);
        let folder = self.dir.as_ref();
        let recorded = match read::recorded_digest(folder, &name) {
            Ok(Some(digest)) => digest,
            Ok(None) => return Ok(Some("it has no checksum file to prove it".into())),
            Err(err) => return Ok(Some(format!("its checksum file cannot be used: {err:#}"))),
        };
        if file.encrypted {
            // A backup host holds no private key: the checksum of the stored bytes and a sound
            // age header are the proof it has.
            return Ok(match read::read_sealed_bytes(folder, &name) {
                Err(err) => Some(format!("it cannot be read back: {err:#}")),
                Ok((_, sha256)) if sha256 != recorded => Some(format!(
                    "its SHA-256 is {sha256}, its checksum file says {recorded}"
                )),
                Ok(_) => None,
            });
        }
        let size = self.section.rbd.size(pool, image, file.snap.as_str())?;
        // The snapshot's size bounds what the file may claim to hold.
        let limit = read::Limit {
            bytes: size,
            why: format!("the size of snapshot {}", file.snap),
            exact: false,
        };
        let read = read::read_raw(folder, &name, file.compression, &limit, |raw| {
            Ok(io::copy(raw, &mut io::sink())?)
        });
        let facts = match read {
            Ok((_, facts)) => facts,
            Err(err) => return Ok(Some(format!("it cannot be read back: {err:#}"))),
        };
        Ok(if facts.sha256 != recorded {
            Some(format!(
                "its SHA-256 is {}, its checksum file says {recorded}",
                facts.sha256
            ))
        } else if facts.raw_bytes != size {
            Some(format!(
                "it holds {} bytes of image where snapshot {} has {size}",
                facts.raw_bytes, file.snap
            ))
        } else {
            None
        })
    }

    /// Prints the line of a build in the folder. stdout says only what happens: it is printed
    /// once the build is known to go ahead (check mode: proven; a real run: done), never before
    /// a fallback to the cluster.
    pub(super) fn announce_build(image: &str, file: &BackupFile, from: &str, diffs: &[String]) {
        if naming::is_working_name(from) {
            outln!(
                "Finishing image {image}@{} from an interrupted build (no cluster read)",
                file.snap
            );
        } else {
            outln!(
                "Building image {} from {from} and {} (no cluster read)",
                file.file_name(image),
                diffs.join(", ")
            );
        }
        if file.compressed() {
            outln!("Compress mode activated");
        }
    }

    /// The build a door that changes nothing in place (check mode's) is asked for: reading is
    /// allowed, so it shows the fallback a real run would take.
    pub(super) fn check_build(
        &mut self,
        file: &BackupFile,
        from: &str,
        diffs: &[String],
    ) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let doubt = if naming::is_working_name(from) {
            let key = self.destination()?.state().and_then(|state| state.key());
            slide::would_finish(self.dir.as_ref(), image, file, from, key)
        } else {
            slide::would_build(&*self.dir, image, file, from, diffs)
        };
        match doubt {
            None => Self::announce_build(image, file, from, diffs),
            Some(why) => {
                warn!(
                    "{pool}/{image}: {} cannot be built from the folder: {why}; a real run \
                     exports it from the cluster instead",
                    file.file_name(image)
                );
                self.export(file, false)?;
                outln!("Removing file {}", self.dir.location_of(from).display());
            }
        }
        Ok(())
    }

    /// Reports a built base `name`. The build writes (or renames) the files itself: they get the
    /// section's access here, before the record names them.
    pub(super) fn note_built(&mut self, name: &str, size: u64, sha256: &str) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        for written in [name.to_string(), checksum_name(name)] {
            self.dir
                .access()
                .apply_to_path(&self.dir.location_of(&written))?;
        }
        self.bytes_written += size;
        info!("{pool}/{image}: built {name} ({size} bytes, sha256 {sha256})");
        self.done.files_written.push(FileReport {
            file: name.to_string(),
            bytes: Some(size),
        });
        self.done.files_written.push(FileReport {
            file: checksum_name(name),
            bytes: Some(write::checksum_line(sha256, name).len() as u64),
        });
        Ok(())
    }

    /// Writes the full backup `file` of a new base from the old base `from` and `diffs` in the
    /// folder ([`slide`]), or finishes such a build an interrupted run left (`from` is then its
    /// working file). When the files cannot be proven, `file` is exported from the cluster as
    /// the original did, and `from` removed.
    pub(super) fn build_base(
        &mut self,
        file: &BackupFile,
        from: &str,
        diffs: &[String],
    ) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let name = file.file_name(image);
        // In the report a new base is a new full backup, whichever way it is made.
        self.done.full = true;
        // The planner plans a build only for a folder that builds in place; check mode's door
        // says it does but hands out nothing to change, and the build is only proven.
        let Some(local) = self.dir.in_place().cloned() else {
            return self.check_build(file, from, diffs);
        };
        let key = self
            .destination()?
            .state()
            .and_then(|state| state.key())
            .context("internal error: no record key in a real run")?;
        self.keep_lease()?;
        let outcome = if naming::is_working_name(from) {
            slide::finish(&local, image, file, from, Some(key))
        } else {
            slide::build(
                &local,
                image,
                file,
                from,
                diffs,
                self.section.job.compressor_for(file.compression).as_ref(),
                key,
            )
        }
        .with_context(|| format!("cannot build {}", self.dir.location_of(&name).display()))?;
        match outcome {
            slide::BuildOutcome::Built { size, sha256 } => {
                self.note_built(&name, size, &sha256)?;
                Self::announce_build(image, file, from, diffs);
                self.note_consumed(from);
            }
            slide::BuildOutcome::Unproven(why) => {
                warn!(
                    "{pool}/{image}: {name} cannot be built from the folder: {why}; exporting it \
                     from the cluster instead"
                );
                self.export(file, false)?;
                outln!("Removing file {}", self.dir.location_of(from).display());
                slide::discard(&local, from, &name)?;
                self.note_consumed(from);
                return Ok(());
            }
            slide::BuildOutcome::Obsolete => {
                info!(
                    "{pool}/{image}: {name} was written already; the interrupted build is cleared"
                );
                return Ok(());
            }
        }
        self.record.file_completed(&file.snap, &name);
        self.save_record()
    }

    /// The old base a build used up is gone from the folder (a working file of an interrupted
    /// build was never a backup file: it is not reported).
    pub(super) fn note_consumed(&mut self, from: &str) {
        if !naming::is_working_name(from) {
            self.done.files_removed.push(FileReport {
                file: from.to_string(),
                bytes: self.sizes.get(from).copied(),
            });
        }
    }

    /// Writes `file` from the cluster; `replace` lets it take the place of an unproven file of
    /// the same name, which otherwise makes the export fail.
    pub(super) fn export(&mut self, file: &BackupFile, replace: bool) -> Result<()> {
        let (pool, image) = (self.pool().to_string(), self.image);
        let (cmd, base) = self.announce_export(file);
        self.dir.create()?;
        let name = file.file_name(image);
        // Check mode's door stages nothing: there is nothing to read from the cluster.
        let Some(staged) = self.dir.stage(&name)? else {
            return Ok(());
        };
        // An upload a kill would leave unfinished is named in the record first, so the next
        // run can take it back.
        let upload = staged.leftover().map(str::to_string);
        if let Some(id) = &upload {
            self.record.upload_started(&name, id);
            self.save_record()?;
        }
        let rbd = &self.section.rbd;
        let snap = file.snap.as_str();
        let snap_spec = format!("{image}@{snap}");
        // A full export's length must match the snapshot's size: known before the data arrives.
        let expected_size = match file.content {
            Content::Full => Some(rbd.size(&pool, image, snap)?),
            Content::DiffFrom(_) => None,
        };
        let final_path = self.dir.location_of(&name);
        if !replace {
            self.refuse_foreign(&name)?;
        }
        let mut stream = crate::progress::reader(
            rbd.open_export(&pool, image, base, snap)
                .with_context(|| format!("cannot export {snap_spec}"))?,
            expected_size,
            &escaped(&format!("{pool}/{name}")),
        );
        // A signal that came after the last check but before this export was started (and so
        // could be stopped by it) must not let the export run to its end: with several images
        // at once, another image's step may have been that check's last chance.
        interrupt::check()?;
        let (digest, staged) = self
            .write(file, &mut stream, expected_size, staged)
            // A failed rbd explains itself (and stays typed, so a timeout marks the cluster
            // unreachable). A full disk is said in so many words; the export's command line,
            // hundreds of characters of options, is only for the debug log (`-v`).
            .map_err(|err| {
                if CommandError::find(&err).is_some() {
                    return err.context(format!("cannot export {snap_spec}"));
                }
                debug!("writing the output of `{cmd}` failed: {err:#}");
                let err = if disk_full(&err) {
                    anyhow::anyhow!("the disk is full (No space left on device)")
                } else {
                    err
                };
                err.context(format!("cannot write {}", final_path.display()))
            })?;
        // Only the lease holder publishes: a host that stalled past its lease stops here.
        self.keep_lease()?;
        // The checksum goes first: then every backup file that exists has one.
        let published = self.dir.publish(staged, &digest, replace)?;
        if let Some(id) = &upload {
            self.record.upload_ended(id);
        }
        let size = published.size;
        self.bytes_written += size;
        self.done.files_written.push(FileReport {
            file: name.clone(),
            bytes: Some(size),
        });
        self.done.files_written.push(FileReport {
            file: checksum_name(&name),
            bytes: Some(published.checksum_size),
        });
        info!("{pool}/{image}: wrote {name} ({size} bytes, sha256 {digest})");
        self.record.file_completed(&file.snap, &name);
        self.save_record()
    }

    /// Prints the original's lines for the export of `file` and notes its kind in the report;
    /// returns the `rbd` command line shown and the diff's base, if any.
    pub(super) fn announce_export<'f>(
        &mut self,
        file: &'f BackupFile,
    ) -> (String, Option<&'f str>) {
        let image = self.image;
        let raw_path = self.dir.location_of(&file.raw_name(image));
        let snap_spec = format!("{image}@{}", file.snap);
        let base = match &file.content {
            Content::Full => {
                outln!("Exporting image {snap_spec} to {}", raw_path.display());
                self.done.full = true;
                None
            }
            Content::DiffFrom(base) => {
                outln!(
                    "Exporting diff {base} -> {snap_spec} to {}",
                    raw_path.display()
                );
                self.done.diff = true;
                Some(base.as_str())
            }
        };
        if file.compressed() {
            outln!("Compress mode activated");
        }
        let snap = file.snap.as_str();
        let cmd = self
            .section
            .rbd
            .show(self.pool(), image, Op::Export { base, snap });
        outln!("# {cmd}");
        (cmd, base)
    }

    /// A new file never takes the place of something already under its name.
    pub(super) fn refuse_foreign(&self, name: &str) -> Result<()> {
        let path = self.dir.location_of(name);
        match self.dir.kind_of(name) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
            Ok(kind) => bail!(
                "{} exists already ({}), written by something other than this run; it is left \
                 alone",
                path.display(),
                kind.described()
            ),
        }
    }

    /// Streams one export into `out` in the file's format; returns the SHA-256 of the file and
    /// `out`, to be published. A compressed full stores only the ranges `rbd diff` says hold
    /// data (a sparse member).
    pub(super) fn write(
        &self,
        file: &BackupFile,
        stream: &mut impl Read,
        expected_size: Option<u64>,
        out: Staged,
    ) -> Result<(String, Staged)> {
        let recipients = match (file.encrypted, &self.section.job.encrypt_to) {
            (false, _) => None,
            (true, Some(recipients)) => Some(recipients),
            (true, None) => anyhow::bail!(
                "{} is an encrypted file, and `encrypt to` is not set",
                file.file_name(self.image)
            ),
        };
        let Some(compressor) = self.section.job.compressor_for(file.compression) else {
            let (len, digest, out) = match out {
                Staged::File(mut pending) => {
                    let (len, digest) = match recipients {
                        Some(recipients) => {
                            write::write_encrypted(stream, recipients, pending.file())?
                        }
                        None => write::write_raw(stream, pending.file())?,
                    };
                    (len, digest, Staged::File(pending))
                }
                Staged::Stream(upload) => {
                    let (len, digest, upload) = write::write_stream(stream, recipients, upload)?;
                    (len, digest, Staged::Stream(upload))
                }
            };
            if let Some(expected) = expected_size.filter(|&e| e != len) {
                anyhow::bail!("the export had {len} bytes but the snapshot has {expected}");
            }
            return Ok((digest, out));
        };
        let member_name = file.raw_name(self.image);
        let mtime = file.snap.taken();
        let map;
        let (mut data, size, sparse): (Box<dyn Read + '_>, u64, _) = match expected_size {
            Some(size) => {
                let (pool, snap) = (self.pool(), file.snap.as_str());
                let mut builder = SparseMapBuilder::new(size, MAX_SPARSE_EXTENTS);
                self.section
                    .rbd
                    .allocated(pool, self.image, snap, &mut builder)?;
                map = builder.finish();
                (Box::new(DataOfExtents::new(stream, &map)), size, Some(&map))
            }
            None => {
                let (spooled, size) = write::spool(stream, self.dir.scratch()?)?;
                (Box::new(spooled), size, None)
            }
        };
        let member = Member {
            name: &member_name,
            size,
            mtime,
            sparse,
        };
        Ok(write_archive_to(
            out,
            &mut data,
            &member,
            &compressor,
            recipients,
        )?)
    }
}

/// Writes an archive of `data` as `member` into `out`, encrypted for `recipients` when given;
/// returns the SHA-256 of what was written and `out`, to be published.
fn write_archive_to(
    out: Staged,
    data: &mut dyn Read,
    member: &Member,
    compressor: &write::Compressor,
    recipients: Option<&Recipients>,
) -> io::Result<(String, Staged)> {
    match out {
        Staged::File(mut pending) => {
            let file = pending.file();
            let digest = match recipients {
                Some(recipients) => {
                    write::write_encrypted_archive(data, member, compressor, recipients, file)?
                }
                None => write::write_archive(data, member, compressor, file)?,
            };
            Ok((digest, Staged::File(pending)))
        }
        Staged::Stream(upload) => {
            let sink = (upload, Owner::this_process());
            let (digest, upload) =
                write::write_archive_stream(data, member, compressor, recipients, sink)?;
            Ok((digest, Staged::Stream(upload)))
        }
    }
}
