//! The commands besides the backup itself: `list`, `status`, `restore`, `verify`,
//! `init-destination`, and the offline check of a configuration (`--check --offline`).
//! Each takes its own options and returns a result; only `cli` turns those into exit statuses.
//! What they share, reading the configuration and the folders together: which image folders a
//! command looks at ([`catalog`]) and how well each configured image is covered ([`coverage`],
//! also the metrics').

pub mod catalog;
pub mod check_config;
pub mod coverage;
pub mod init;
pub mod list;
pub mod restore;
pub mod status;
pub mod verify;

/// Checks documents against the JSON Schemas in `schema/`, for the tests of every command.
#[cfg(test)]
pub(crate) mod schema_check {
    /// The schema `schema/<kind>.schema.json`, compiled.
    pub fn validator(kind: &str) -> jsonschema::Validator {
        let path = format!("{}/schema/{kind}.schema.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        jsonschema::validator_for(&schema).unwrap()
    }

    /// Panics naming every place where `value` does not match the schema of `kind`.
    pub fn assert_valid(kind: &str, value: &serde_json::Value) {
        let validator = validator(kind);
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:#?}\n{value:#}");
    }

    /// True when the schema of `kind` accepts `value`.
    pub fn accepts(kind: &str, value: &serde_json::Value) -> bool {
        validator(kind).is_valid(value)
    }
}
