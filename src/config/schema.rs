//! Pool sections: raw entries, plus what `[DEFAULT]` and `%(name)s` references give them, to a
//! validated job; the values a section's mode does not use are only warned about.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::folder::access::FileGroup;
use crate::folder::door::{CredentialSource, ObjectStore, StoreKey};
use crate::folder::format::encrypt::Recipients;

/// Marks a field whose problem has already been recorded.
pub(super) struct Reported;

/// A value with its references expanded, and where it was written.
pub(super) struct Value<'a> {
    pub(super) text: String,
    pub(super) line: usize,
    pub(super) section: &'a str,
}

pub(super) struct PoolReader<'a, 'p> {
    pub(super) file: &'a Path,
    pub(super) pool: &'a RawSection,
    pub(super) defaults: &'a RawSection,
    pub(super) findings: &'p mut Findings,
}

impl<'a> PoolReader<'a, '_> {
    pub(super) fn job(mut self) -> Result<PoolJob, Reported> {
        let images = self.required(IMAGES, parse_images);
        let exclude = self.optional(EXCLUDE, parse_exclude);
        let images = match (images, &exclude) {
            (Ok(images), Ok(Some(exclude))) => self.drop_excluded(images, exclude),
            (images, _) => images,
        };
        let groups = self.groups(
            images.as_ref().ok(),
            exclude.as_ref().ok().and_then(Option::as_ref),
        );
        let destination = self.required(DESTINATION, parse_required_text);
        let mode = self.required(BACKUP_MODE, parse_backup_mode);
        let encrypt_to = self.optional(ENCRYPT_TO, Recipients::parse);
        let images = match (images, &mode) {
            (Ok(images), Ok(mode)) => {
                let encrypted = !matches!(encrypt_to, Ok(None));
                self.image_name_lengths(images, *mode, encrypted)
            }
            (images, _) => images,
        };
        let ceph_config = self.optional(CEPH_CONFIG, parse_optional_text);
        let ceph_user = self.optional(CEPH_USER, parse_optional_text);
        let ceph_keyring = self.optional(CEPH_KEYRING, parse_optional_text);
        let compress = self.optional(COMPRESS, parse_compress);
        let compress_level = self.compress_level(compress.as_ref().ok().copied().flatten());
        let compress_threads = self.optional(COMPRESS_THREADS, parse_threads);
        let check_mode = self.optional(CHECK_MODE, parse_bool);
        let quiesce = self.optional(QUIESCE, parse_quiesce);
        let pre_hook = self.optional(PRE_SNAPSHOT_COMMAND, parse_command);
        let post_hook = self.optional(POST_SNAPSHOT_COMMAND, parse_command);
        let hook_timeout = self.optional(HOOK_TIMEOUT, parse_hook_timeout);
        let window = self.window(mode.as_ref().ok().copied());
        let ceph_timeout = self.optional(CEPH_TIMEOUT, parse_ceph_timeout);
        let keep = self.keep_rules(mode.as_ref().ok().copied());
        let keep_minimum = self.keep_minimum(mode.as_ref().ok().copied());
        let slide_from_cluster = self.optional(SLIDE_FROM_CLUSTER, parse_bool);
        let file_group = self.optional(FILE_GROUP, FileGroup::lookup);
        let store = self.object_store(destination.as_deref().ok());
        let pool = self.pool_spec();
        if let Err(message) = crate::folder::naming::check_pool_spec(&pool) {
            let problem = ConfigProblem {
                file: self.file.to_path_buf(),
                line: self.pool.line,
                section: Some(self.pool.name.clone()),
                key: None,
                message,
            };
            self.findings.add(Severity::Error, problem);
        }

        // Every field is read before the first `?` so that all problems get recorded.
        let destination_text = destination?;
        Ok(PoolJob {
            pool,
            section: self.pool.name.clone(),
            line: self.pool.line,
            images: images?,
            exclude: exclude?.unwrap_or_default(),
            destination: PathBuf::from(&destination_text),
            destination_text,
            ceph_config: PathBuf::from(ceph_config?.as_deref().unwrap_or(DEFAULT_CEPH_CONFIG)),
            ceph_user: ceph_user?,
            ceph_keyring: ceph_keyring?.map(PathBuf::from),
            ceph_timeout: ceph_timeout?.unwrap_or(DEFAULT_CEPH_TIMEOUT),
            mode: mode?,
            compress: compress?.unwrap_or_default(),
            compress_level: compress_level?,
            compress_threads: compress_threads?,
            check_mode: check_mode?.unwrap_or(false),
            quiesce: quiesce?.unwrap_or_default(),
            hooks: Hooks {
                pre: pre_hook?,
                post: post_hook?,
                timeout: std::time::Duration::from_secs(u64::from(
                    hook_timeout?.unwrap_or(DEFAULT_HOOK_TIMEOUT),
                )),
            },
            groups: groups?,
            window: window?,
            keep: keep?,
            keep_minimum: keep_minimum?,
            slide_from_cluster: slide_from_cluster?.unwrap_or(false),
            file_group: file_group?,
            encrypt_to: encrypt_to?,
            store: store?,
        })
    }

    /// The object store an `s3://` destination names, with its `s3 …` keys; `None` for a folder.
    pub(super) fn object_store(
        &mut self,
        destination: Option<&str>,
    ) -> Result<Option<ObjectStore>, Reported> {
        let endpoint = self.optional(S3_ENDPOINT, parse_optional_text)?;
        let region = self.optional(S3_REGION, parse_optional_text)?;
        let credentials = self.optional(S3_CREDENTIALS, parse_optional_text)?;
        let Some(destination) = destination.filter(|d| ObjectStore::is_named_by(d)) else {
            return Ok(None);
        };
        let section = self.pool.name.clone();
        let Some(endpoint) = endpoint else {
            let message =
                "required key is missing (the destination is an S3 bucket: its service's URL)";
            self.record(
                Severity::Error,
                self.pool.line,
                &section,
                S3_ENDPOINT,
                message.into(),
            );
            return Err(Reported);
        };
        let source = match &credentials {
            Some(path) => CredentialSource::File(Path::new(path)),
            None => CredentialSource::Environment,
        };
        let region = region.as_deref().unwrap_or(DEFAULT_S3_REGION);
        ObjectStore::new(destination, &endpoint, region, &source)
            .map(Some)
            .map_err(|(key, message)| {
                let key = match (key, &credentials) {
                    (StoreKey::Destination, _) => DESTINATION,
                    (StoreKey::Endpoint, _) => S3_ENDPOINT,
                    (StoreKey::Credentials, Some(_)) => S3_CREDENTIALS,
                    // From the environment: said where the store is named.
                    (StoreKey::Credentials, None) => DESTINATION,
                };
                let line = self
                    .written(key)
                    .map_or(self.pool.line, |(entry, _)| entry.line);
                let at = self
                    .written(key)
                    .map_or(section.clone(), |(_, s)| s.to_string());
                self.record(Severity::Error, line, &at, key, message);
                Reported
            })
    }

    /// The pool as rbd names it: the section's name, with `/namespace` when `namespace` is set.
    pub(super) fn pool_spec(&mut self) -> String {
        let name = self.pool.name.clone();
        let Ok(Some(namespace)) = self.optional(NAMESPACE, parse_required_text) else {
            return name;
        };
        if name.contains('/') {
            let line = self
                .written(NAMESPACE)
                .map_or(self.pool.line, |(e, _)| e.line);
            let message = format!(
                "the section [{}] names its namespace already",
                printable(&name)
            );
            self.record(Severity::Error, line, &name, NAMESPACE, message);
            return name;
        }
        format!("{name}/{namespace}")
    }

    /// The section's `group NAME` keys: each member an image the section backs up (listed, or
    /// any with `images = *`), not excluded, and in one group only. A group in `[DEFAULT]` would
    /// name images of every pool, so it is refused there.
    pub(super) fn groups(
        &mut self,
        images: Option<&ImageSelection>,
        exclude: Option<&Exclude>,
    ) -> Result<Vec<ImageGroup>, Reported> {
        let defaults = self.defaults;
        let mut failed = false;
        for entry in defaults
            .entries
            .iter()
            .filter(|e| group_name(&e.key).is_some())
        {
            let message = "a group names images of one pool: write it in that pool's section";
            self.record(
                Severity::Error,
                entry.line,
                &defaults.name,
                &entry.key,
                message.to_string(),
            );
            failed = true;
        }
        let pool = self.pool;
        let mut groups: Vec<ImageGroup> = Vec::new();
        for entry in pool.entries.iter() {
            let Some(name) = group_name(&entry.key) else {
                continue;
            };
            let members = match self.group_members(entry, name, images, exclude, &groups) {
                Ok(members) => members,
                Err(message) => {
                    self.record(Severity::Error, entry.line, &pool.name, &entry.key, message);
                    failed = true;
                    continue;
                }
            };
            groups.push(ImageGroup {
                name: name.to_string(),
                images: members,
                line: entry.line,
            });
        }
        if failed {
            return Err(Reported);
        }
        Ok(groups)
    }

    fn group_members(
        &mut self,
        entry: &RawEntry,
        name: &str,
        images: Option<&ImageSelection>,
        exclude: Option<&Exclude>,
        earlier: &[ImageGroup],
    ) -> Result<Vec<String>, String> {
        if name.is_empty() {
            return Err("a group needs a name: `group NAME = image, image`".to_string());
        }
        let text = self.expand_references(&entry.value)?;
        let ImageSelection::Named(members) = parse_images(&text)? else {
            return Err("'*' cannot be a group's member: name the images".to_string());
        };
        for member in &members {
            if let Some(ImageSelection::Named(listed)) = images {
                if !listed.contains(member) {
                    return Err(format!(
                        "names {}, which `images` does not list",
                        quoted(member)
                    ));
                }
            }
            if exclude.is_some_and(|exclude| exclude.matches(member)) {
                return Err(format!(
                    "names {}, which `exclude` leaves out",
                    quoted(member)
                ));
            }
            if let Some(other) = earlier.iter().find(|g| g.images.contains(member)) {
                return Err(format!(
                    "names {}, which group {} at line {} has already (an image is in one \
                     group only)",
                    quoted(member),
                    quoted(&other.name),
                    other.line
                ));
            }
        }
        Ok(members)
    }

    /// Drops the listed images that `exclude` leaves out, each with a warning (a name written
    /// and excluded is a contradiction, but the exclusion is the safer reading); an error when
    /// none is left.
    pub(super) fn drop_excluded(
        &mut self,
        images: ImageSelection,
        exclude: &Exclude,
    ) -> Result<ImageSelection, Reported> {
        let ImageSelection::Named(names) = images else {
            return Ok(images);
        };
        let (kept, dropped): (Vec<String>, Vec<String>) =
            names.into_iter().partition(|name| !exclude.matches(name));
        if dropped.is_empty() {
            return Ok(ImageSelection::Named(kept));
        }
        let (entry, section) = self.written(EXCLUDE).ok_or(Reported)?;
        let (line, section) = (entry.line, section.to_string());
        if kept.is_empty() {
            let message = "leaves out every image `images` lists: nothing would be backed up";
            self.record(
                Severity::Error,
                line,
                &section,
                EXCLUDE,
                message.to_string(),
            );
            return Err(Reported);
        }
        for name in dropped {
            let message = format!("leaves out {}, which `images` lists", quoted(&name));
            self.record(Severity::Warning, line, &section, EXCLUDE, message);
        }
        Ok(ImageSelection::Named(kept))
    }

    /// Refuses the listed images whose backup files would have names too long for the
    /// destination's filesystem, before any snapshot is taken (`images = *` is checked per image
    /// when the run lists them).
    pub(super) fn image_name_lengths(
        &mut self,
        images: ImageSelection,
        mode: BackupMode,
        encrypted: bool,
    ) -> Result<ImageSelection, Reported> {
        let ImageSelection::Named(names) = &images else {
            return Ok(images);
        };
        let diffs = mode == BackupMode::Incremental;
        let problems: Vec<String> = names
            .iter()
            .filter_map(|name| {
                crate::folder::naming::check_name_length(name, diffs, encrypted).err()
            })
            .collect();
        if problems.is_empty() {
            return Ok(images);
        }
        let (entry, section) = self.written(IMAGES).ok_or(Reported)?;
        for message in problems {
            self.record(Severity::Error, entry.line, section, IMAGES, message);
        }
        Err(Reported)
    }

    /// `compress level`, checked against the range of the section's compressor (once that is
    /// known: a wrong `compress` is reported on its own).
    pub(super) fn compress_level(
        &mut self,
        compression: Option<Compression>,
    ) -> Result<Option<u32>, Reported> {
        let Some(level) = self.optional(COMPRESS_LEVEL, parse_level)? else {
            return Ok(None);
        };
        if let Err(message) = check_level(compression.unwrap_or_default(), level) {
            let (entry, section) = self.written(COMPRESS_LEVEL).ok_or(Reported)?;
            self.record(
                Severity::Error,
                entry.line,
                section,
                COMPRESS_LEVEL,
                message,
            );
            return Err(Reported);
        }
        Ok(Some(level))
    }

    /// The full-mode keep rules. In an incremental section they mean nothing (the window and
    /// `keep minimum` decide there), so a mistake in them is only a warning, and one written in
    /// the section itself is reported as ignored; one inherited from `[DEFAULT]` is meant for the
    /// full-mode sections and is silently not used.
    pub(super) fn keep_rules(&mut self, mode: Option<BackupMode>) -> Result<KeepRules, Reported> {
        let severity = match mode {
            Some(BackupMode::Incremental) => Severity::Warning,
            Some(BackupMode::Full) | None => Severity::Error,
        };
        let [last, daily, weekly, monthly] =
            KEEP_RULE_KEYS.map(|key| self.optional_as(key, parse_count, severity));
        let rules = KeepRules {
            last: last?,
            daily: daily?,
            weekly: weekly?,
            monthly: monthly?,
        };
        match mode {
            Some(BackupMode::Incremental) => {
                for (key, value) in KEEP_RULE_KEYS.iter().zip(rules_in_key_order(&rules)) {
                    if value.is_some() {
                        self.ignored_in_this_mode(
                            key,
                            "only full mode uses keep rules; ignored in this incremental \
                             section, whose history the window and keep minimum decide",
                        );
                    }
                }
                Ok(KeepRules::default())
            }
            Some(BackupMode::Full) | None => self.keep_rules_keep_something(rules),
        }
    }

    /// Rules that are all 0 would remove every backup but the newest: far more likely a mistake
    /// than a wish, and not one to find out about after the fact.
    pub(super) fn keep_rules_keep_something(
        &mut self,
        rules: KeepRules,
    ) -> Result<KeepRules, Reported> {
        if !rules.is_set() || rules.rules().any(|(_, count)| count > 0) {
            return Ok(rules);
        }
        let first = KEEP_RULE_KEYS.iter().find_map(|key| {
            self.written(key)
                .map(|(entry, section)| (*key, entry, section))
        });
        if let Some((key, entry, section)) = first {
            let message = "every keep rule is 0, which would remove every backup but the newest; \
                           set one to 1 or more, or remove the keep rules to keep every backup"
                .to_string();
            self.record(Severity::Error, entry.line, section, key, message);
        }
        Err(Reported)
    }

    /// `keep minimum`, which only incremental mode uses (0 means the same as 1: the point a run
    /// takes always remains).
    pub(super) fn keep_minimum(&mut self, mode: Option<BackupMode>) -> Result<u32, Reported> {
        let severity = match mode {
            Some(BackupMode::Full) => Severity::Warning,
            Some(BackupMode::Incremental) | None => Severity::Error,
        };
        let minimum = self.optional_as(KEEP_MINIMUM, parse_count, severity)?;
        if mode == Some(BackupMode::Full) {
            if minimum.is_some() {
                self.ignored_in_this_mode(
                    KEEP_MINIMUM,
                    "only incremental mode uses keep minimum; ignored in this full-mode section \
                     (its keep rules are keep last, keep daily, keep weekly and keep monthly)",
                );
            }
            return Ok(DEFAULT_KEEP_MINIMUM);
        }
        Ok(minimum.map_or(DEFAULT_KEEP_MINIMUM, |n| n.max(1)))
    }

    /// Warns about `key` when it is written in this pool's own section; from `[DEFAULT]` it is
    /// meant for the sections whose mode uses it.
    pub(super) fn ignored_in_this_mode(&mut self, key: &str, message: &str) {
        let Some(entry) = self.pool.get(key) else {
            return;
        };
        let (line, section) = (entry.line, self.pool.name.clone());
        self.record(Severity::Warning, line, &section, key, message.to_string());
    }

    /// `window size` and `window unit`, which only incremental mode uses. Full mode never looks at
    /// them, so a mistake there cannot change what a run does: it is a warning and the default
    /// stands in. When the mode itself is wrong or missing they stay errors, to be safe.
    pub(super) fn window(&mut self, mode: Option<BackupMode>) -> Result<Window, Reported> {
        let severity = match mode {
            Some(BackupMode::Full) => Severity::Warning,
            Some(BackupMode::Incremental) | None => Severity::Error,
        };
        let size = self.optional_as(WINDOW_SIZE, parse_window_size, severity);
        let unit = self.optional_as(WINDOW_UNIT, parse_window_unit, severity);
        let window = Window {
            size: size?.unwrap_or(DEFAULT_WINDOW.size),
            unit: unit?.unwrap_or(DEFAULT_WINDOW.unit),
        };
        let Err(message) = window.check_length() else {
            return Ok(window);
        };
        // Only a size that was written can exceed the bound: the default one never does.
        let (line, section) = self.written(WINDOW_SIZE).map_or(
            (self.pool.line, self.pool.name.as_str()),
            |(entry, section)| (entry.line, section),
        );
        self.record(severity, line, section, WINDOW_SIZE, message);
        match severity {
            Severity::Error => Err(Reported),
            Severity::Warning => Ok(DEFAULT_WINDOW),
        }
    }

    pub(super) fn required<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<T, Reported> {
        match self.optional(key, parse)? {
            Some(parsed) => Ok(parsed),
            None => {
                let (line, section) = (self.pool.line, self.pool.name.as_str());
                let message = "required key is missing".to_string();
                self.record(Severity::Error, line, section, key, message);
                Err(Reported)
            }
        }
    }

    /// `Ok(None)` when the key is set neither in the pool nor in `[DEFAULT]`.
    pub(super) fn optional<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Reported> {
        self.optional_as(key, parse, Severity::Error)
    }

    /// Like [`Self::optional`], reporting a problem with `severity`; after a warning the key
    /// counts as not set.
    pub(super) fn optional_as<T>(
        &mut self,
        key: &str,
        parse: fn(&str) -> Result<T, String>,
        severity: Severity,
    ) -> Result<Option<T>, Reported> {
        let Some(value) = self.value(key, severity)? else {
            return Ok(None);
        };
        match parse(&value.text) {
            Ok(parsed) => Ok(Some(parsed)),
            Err(message) => {
                self.record(severity, value.line, value.section, key, message);
                unset_after(severity)
            }
        }
    }

    pub(super) fn value(
        &mut self,
        key: &str,
        severity: Severity,
    ) -> Result<Option<Value<'a>>, Reported> {
        let Some((entry, section)) = self.written(key) else {
            return Ok(None);
        };
        match self.expand_references(&entry.value) {
            Ok(text) => Ok(Some(Value {
                text,
                line: entry.line,
                section,
            })),
            Err(message) => {
                self.record(severity, entry.line, section, key, message);
                unset_after(severity)
            }
        }
    }

    /// The entry for `key` and the name of the section it was written in.
    pub(super) fn written(&self, key: &str) -> Option<(&'a RawEntry, &'a str)> {
        let (pool, defaults) = (self.pool, self.defaults);
        pool.get(key)
            .map(|entry| (entry, pool.name.as_str()))
            .or_else(|| {
                defaults
                    .get(key)
                    .map(|entry| (entry, defaults.name.as_str()))
            })
    }

    /// The raw text a `%(name)s` reference stands for, looked up as ConfigParser does: the
    /// section's own keys, then its name, then `[DEFAULT]`.
    pub(super) fn referenced(&self, name: &str) -> Option<&'a str> {
        let (pool, defaults) = (self.pool, self.defaults);
        if let Some(entry) = pool.get(name) {
            Some(&entry.value)
        } else if name == SECTION_NAME_REFERENCE {
            Some(&pool.name)
        } else {
            defaults.get(name).map(|entry| entry.value.as_str())
        }
    }

    /// Bounded three ways: nesting depth (as ConfigParser), the number of references followed,
    /// and the size of the result, which alone keeps memory small whatever the file holds.
    pub(super) fn expand_references(&self, raw: &str) -> Result<String, String> {
        if raw.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "value is longer than 64 KiB ({MAX_VALUE_BYTES} bytes)"
            ));
        }
        let mut expanded = String::with_capacity(raw.len());
        let mut budget = MAX_REFERENCE_EXPANSIONS;
        self.expand_into(raw, 0, &mut budget, &mut expanded)?;
        Ok(expanded)
    }

    pub(super) fn expand_into(
        &self,
        text: &str,
        depth: usize,
        budget: &mut usize,
        out: &mut String,
    ) -> Result<(), String> {
        let mut rest = text;
        while let Some(start) = rest.find("%(") {
            push_bounded(out, &rest[..start])?;
            let reference = &rest[start..];
            let name_and_after = &reference[2..];
            let Some(name_end) = name_and_after
                .find(')')
                .filter(|&end| name_and_after[end + 1..].starts_with('s'))
            else {
                return Err(malformed_reference_message(reference));
            };
            let name = name_and_after[..name_end].to_ascii_lowercase();
            let Some(target) = self.referenced(&name) else {
                return Err(format!(
                    "'%({})s' refers to {}, which is not set in [{}] or [{DEFAULT_SECTION}]",
                    excerpt(&name, MAX_QUOTED_CHARS),
                    quoted(&name),
                    excerpt(&self.pool.name, MAX_QUOTED_CHARS)
                ));
            };
            if depth >= MAX_REFERENCE_DEPTH {
                return Err(format!(
                    "'%(...)s' references are nested more than {MAX_REFERENCE_DEPTH} deep \
                     (does a value refer to itself?)"
                ));
            }
            *budget = budget
                .checked_sub(1)
                .ok_or_else(|| "'%(...)s' references expand too many times".to_string())?;
            self.expand_into(target, depth + 1, budget, out)?;
            rest = &name_and_after[name_end + 2..];
        }
        push_bounded(out, rest)
    }

    pub(super) fn record(
        &mut self,
        severity: Severity,
        line: usize,
        section: &str,
        key: &str,
        message: String,
    ) {
        let problem = ConfigProblem {
            file: self.file.to_path_buf(),
            line,
            section: Some(section.to_string()),
            key: Some(key.to_string()),
            message,
        };
        self.findings.add(severity, problem);
    }
}

/// What a field is after its problem was recorded: an error fails it; after a warning it counts
/// as not set, so that its default stands in.
pub(super) fn unset_after<T>(severity: Severity) -> Result<Option<T>, Reported> {
    match severity {
        Severity::Error => Err(Reported),
        Severity::Warning => Ok(None),
    }
}

/// Appends to an expanding value unless that would make it longer than [`MAX_VALUE_BYTES`].
pub(super) fn push_bounded(out: &mut String, text: &str) -> Result<(), String> {
    if out.len() + text.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "'%(...)s' references expand to more than 64 KiB ({MAX_VALUE_BYTES} bytes)"
        ));
    }
    out.push_str(text);
    Ok(())
}

pub(super) fn malformed_reference_message(reference: &str) -> String {
    let excerpt: String = reference.chars().take(24).collect();
    format!(
        "malformed reference {} (expected '%(name)s')",
        quoted(&excerpt)
    )
}
