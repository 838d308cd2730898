//! The backend registry (opendal style: the only face callers see of a
//! backend). The caller builds the entries, the CLI from its cargo
//! features; an unknown name lists the known ones, a known name left out
//! of this build says which feature adds it.

use bottle_core::{Backend, Error, Result};

/// One backend bottle knows about.
pub struct Entry {
    /// Backend id.
    pub name: &'static str,
    /// Cargo feature that compiles it in.
    pub feature: &'static str,
    /// Constructor, `None` when compiled out.
    pub make: Option<fn() -> Box<dyn Backend>>,
}

/// Every backend bottle knows about, compiled in or not.
#[derive(Clone, Copy)]
pub struct Registry(pub &'static [Entry]);

impl Registry {
    /// The backend `name`.
    pub fn get(&self, name: &str) -> Result<Box<dyn Backend>> {
        lookup(self.0, name)
    }

    /// Every entry, in order.
    pub fn entries(&self) -> &'static [Entry] {
        self.0
    }
}

/// Look `name` up in `entries`.
pub fn lookup(entries: &[Entry], name: &str) -> Result<Box<dyn Backend>> {
    match entries.iter().find(|e| e.name == name) {
        None => Err(Error::UnknownBackend {
            name: name.to_owned(),
            known: entries.iter().map(|e| e.name.to_owned()).collect(),
        }),
        Some(Entry {
            make: None,
            feature,
            ..
        }) => Err(Error::BackendNotCompiled {
            name: name.to_owned(),
            feature: (*feature).to_owned(),
        }),
        Some(Entry {
            make: Some(make), ..
        }) => Ok(make()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_compiled_out_backends_say_what_to_do() {
        let entries = [
            Entry {
                name: "docker",
                feature: "docker",
                make: None,
            },
            Entry {
                name: "smolmachines",
                feature: "smolmachines",
                make: None,
            },
        ];
        let e = lookup(&entries, "nosuch").err().unwrap();
        assert_eq!(
            e.to_string(),
            "unknown backend `nosuch` (known: docker, smolmachines)"
        );
        assert!(matches!(e, Error::UnknownBackend { .. }));
        let e = lookup(&entries, "smolmachines").err().unwrap();
        assert_eq!(
            e.to_string(),
            "backend `smolmachines` is not compiled into this build (enable feature `smolmachines`)"
        );
        assert!(matches!(e, Error::BackendNotCompiled { .. }));
    }
}
