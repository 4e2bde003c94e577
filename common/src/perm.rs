//! Permission strings in pyftpdlib's letters.
//!
//! A user's rights are a string such as `"elradfmwMT"`: each letter allows a family of FTP
//! commands. The strings come from users.toml, the CLI and the web UI, so parsing refuses
//! unknown and repeated letters with an error naming the letter, instead of guessing.

use std::fmt;
use std::str::FromStr;

/// One permission letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Perm {
    /// `e`: change directory (CWD, CDUP).
    ChangeDir,
    /// `l`: list (LIST, NLST, STAT, MLSD, MLST, SIZE).
    List,
    /// `r`: download (RETR).
    Read,
    /// `a`: append (APPE).
    Append,
    /// `d`: delete (DELE, RMD).
    Delete,
    /// `f`: rename (RNFR, RNTO).
    Rename,
    /// `m`: make directory (MKD).
    MakeDir,
    /// `w`: store (STOR, STOU).
    Write,
    /// `M`: change mode (SITE CHMOD).
    Chmod,
    /// `T`: change modification time (MFMT, SITE MFMT).
    SetTime,
}

impl Perm {
    /// Every letter, in pyftpdlib's canonical order.
    pub const ALL: [Perm; 10] = [
        Perm::ChangeDir,
        Perm::List,
        Perm::Read,
        Perm::Append,
        Perm::Delete,
        Perm::Rename,
        Perm::MakeDir,
        Perm::Write,
        Perm::Chmod,
        Perm::SetTime,
    ];

    pub fn letter(self) -> char {
        match self {
            Perm::ChangeDir => 'e',
            Perm::List => 'l',
            Perm::Read => 'r',
            Perm::Append => 'a',
            Perm::Delete => 'd',
            Perm::Rename => 'f',
            Perm::MakeDir => 'm',
            Perm::Write => 'w',
            Perm::Chmod => 'M',
            Perm::SetTime => 'T',
        }
    }

    pub fn from_letter(letter: char) -> Option<Perm> {
        Perm::ALL.into_iter().find(|perm| perm.letter() == letter)
    }

    /// A few words on what the letter allows.
    pub fn meaning(self) -> &'static str {
        match self {
            Perm::ChangeDir => "change directory",
            Perm::List => "list",
            Perm::Read => "download",
            Perm::Append => "append",
            Perm::Delete => "delete",
            Perm::Rename => "rename",
            Perm::MakeDir => "make directory",
            Perm::Write => "store",
            Perm::Chmod => "change mode",
            Perm::SetTime => "change modification time",
        }
    }

    /// The FTP commands the letter allows.
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            Perm::ChangeDir => &["CWD", "CDUP"],
            Perm::List => &["LIST", "NLST", "STAT", "MLSD", "MLST", "SIZE", "MDTM"],
            Perm::Read => &["RETR"],
            Perm::Append => &["APPE"],
            Perm::Delete => &["DELE", "RMD"],
            Perm::Rename => &["RNFR", "RNTO"],
            Perm::MakeDir => &["MKD"],
            Perm::Write => &["STOR", "STOU"],
            Perm::Chmod => &["SITE CHMOD"],
            Perm::SetTime => &["MFMT", "SITE MFMT"],
        }
    }

    fn bit(self) -> u16 {
        1 << Perm::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' ({})", self.letter(), self.meaning())
    }
}

/// A set of permission letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PermSet(u16);

/// Why a permission string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermError {
    #[error("unknown permission letter '{letter}' in \"{string}\" (allowed: e l r a d f m w M T)")]
    UnknownLetter { string: String, letter: char },
    #[error("permission letter '{letter}' appears twice in \"{string}\"")]
    Repeated { string: String, letter: char },
}

impl PermSet {
    pub const NONE: PermSet = PermSet(0);

    pub fn all() -> PermSet {
        Perm::ALL.into_iter().collect()
    }

    pub fn contains(self, perm: Perm) -> bool {
        self.0 & perm.bit() != 0
    }

    pub fn with(self, perm: Perm) -> PermSet {
        PermSet(self.0 | perm.bit())
    }

    pub fn without(self, perm: Perm) -> PermSet {
        PermSet(self.0 & !perm.bit())
    }

    pub fn iter(self) -> impl Iterator<Item = Perm> {
        Perm::ALL
            .into_iter()
            .filter(move |perm| self.contains(*perm))
    }
}

impl FromIterator<Perm> for PermSet {
    fn from_iter<I: IntoIterator<Item = Perm>>(iter: I) -> Self {
        iter.into_iter().fold(PermSet::NONE, PermSet::with)
    }
}

impl FromStr for PermSet {
    type Err = PermError;

    fn from_str(string: &str) -> Result<Self, Self::Err> {
        let mut set = PermSet::NONE;
        for letter in string.chars() {
            let perm = Perm::from_letter(letter).ok_or_else(|| PermError::UnknownLetter {
                string: string.to_owned(),
                letter,
            })?;
            if set.contains(perm) {
                return Err(PermError::Repeated {
                    string: string.to_owned(),
                    letter,
                });
            }
            set = set.with(perm);
        }
        Ok(set)
    }
}

impl fmt::Display for PermSet {
    /// The letters in canonical order, e.g. `elrw`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.iter()
            .try_for_each(|perm| write!(f, "{}", perm.letter()))
    }
}

impl TryFrom<String> for PermSet {
    type Error = PermError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PermSet> for String {
    fn from(value: PermSet) -> String {
        value.to_string()
    }
}

impl<'de> serde::Deserialize<'de> for PermSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let string = String::deserialize(deserializer)?;
        string.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for PermSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_letter_and_prints_canonically() {
        let set: PermSet = "TMwmfdarle".parse().unwrap();
        assert_eq!(set, PermSet::all());
        assert_eq!(set.to_string(), "elradfmwMT");
        assert_eq!("".parse::<PermSet>().unwrap(), PermSet::NONE);
    }

    #[test]
    fn refuses_unknown_and_repeated_letters() {
        let err = "elrx".parse::<PermSet>().unwrap_err();
        assert_eq!(
            err,
            PermError::UnknownLetter {
                string: "elrx".into(),
                letter: 'x'
            }
        );
        assert!(err.to_string().contains("'x'"));
        let err = "elre".parse::<PermSet>().unwrap_err();
        assert!(matches!(err, PermError::Repeated { letter: 'e', .. }));
        // Letters are case-sensitive: 'm' and 'M' differ, 'W' is unknown.
        assert!("mM".parse::<PermSet>().is_ok());
        assert!("W".parse::<PermSet>().is_err());
    }

    #[test]
    fn without_removes_exactly_one_letter() {
        for perm in Perm::ALL {
            let set = PermSet::all().without(perm);
            assert!(!set.contains(perm));
            assert_eq!(set.iter().count(), 9);
        }
    }
}
