//! Parsing our TOML configuration files (profiles, unit and fleet configs)
//! with errors that name the file, the line, the key path and what was
//! expected, e.g.
//! `images/flypack.toml:12: debian.packages[3]: "Foo" is not a Debian package name ...`.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A configuration error: the file, the key path and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {key}: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted key path (`debian.packages[3]`), or `.` for the whole file.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error about `key` in `file`.
    pub fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: file.display().to_string(),
            line: None,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Several configuration errors, reported together so a user fixes them in
/// one pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Parses `text` (the content of `file`) into `T`, mapping every error to a
/// [`ConfigError`] with its key path.
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let de = match toml::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => {
            return Err(ConfigError {
                file: file.display().to_string(),
                line: e.span().map(|s| line_of(text, s.start)),
                key: ".".into(),
                message: format!("not valid TOML: {}", e.message()),
            });
        }
    };
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            file: file.display().to_string(),
            line: inner.span().map(|s| line_of(text, s.start)),
            key: if path.is_empty() { ".".into() } else { path },
            message: inner.message().trim().to_string(),
        }
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        list: Vec<u32>,
    }

    #[test]
    fn errors_carry_key_path_and_line() {
        let f = Path::new("p.toml");
        let cases = [
            ("name = \"x\"\n[inner]\nlist = [1, \"two\"]\n", "inner.list[1]", Some(3)),
            ("name = \"x\"\n[inner]\nlist = []\nbogus = 1\n", "inner.bogus", Some(4)),
            ("name = 3\n[inner]\nlist = []\n", "name", Some(1)),
            ("[inner]\nlist = []\n", ".", Some(1)),
            ("name = \n", ".", Some(1)),
        ];
        for (text, key, line) in cases {
            let err = parse_toml::<Outer>(f, text).unwrap_err();
            assert_eq!(err.key, key, "{text:?}: {err}");
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert_eq!(err.file, "p.toml");
        }
        let err = parse_toml::<Outer>(f, "name = \"x\"\n[inner]\nlist = []\nbogus = 1\n").unwrap_err();
        assert!(err.message.contains("unknown field `bogus`"), "{err}");
        assert!(err.message.contains("expected `list`"), "{err}");
    }
}
