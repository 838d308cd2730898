//! The static backend registry, built from cargo features (sqlx `Any` style):
//! an unknown name lists the known ones; a known name that this build left
//! out says which feature adds it.

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

#[cfg(feature = "docker")]
fn docker() -> Box<dyn Backend> {
    Box::new(bottle_docker::DockerBackend::default())
}

#[cfg(feature = "smolmachines")]
fn smolmachines() -> Box<dyn Backend> {
    Box::new(bottle_smolmachines::SmolmachinesBackend::default())
}

/// Every backend, compiled in or not.
pub static BACKENDS: &[Entry] = &[
    Entry {
        name: "docker",
        feature: "docker",
        #[cfg(feature = "docker")]
        make: Some(docker),
        #[cfg(not(feature = "docker"))]
        make: None,
    },
    Entry {
        name: "smolmachines",
        feature: "smolmachines",
        #[cfg(feature = "smolmachines")]
        make: Some(smolmachines),
        #[cfg(not(feature = "smolmachines"))]
        make: None,
    },
];

/// Look a backend up by name.
pub fn get(name: &str) -> Result<Box<dyn Backend>> {
    lookup(BACKENDS, name)
}

fn lookup(entries: &[Entry], name: &str) -> Result<Box<dyn Backend>> {
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
        assert_eq!(crate::exit_code(&e), 2);
        let e = lookup(&entries, "smolmachines").err().unwrap();
        assert_eq!(
            e.to_string(),
            "backend `smolmachines` is not compiled into this build (enable feature `smolmachines`)"
        );
        assert_eq!(crate::exit_code(&e), 3);
    }

    #[test]
    fn the_registry_lists_both_backends_whatever_the_features() {
        let names: Vec<_> = BACKENDS.iter().map(|e| e.name).collect();
        assert_eq!(names, ["docker", "smolmachines"]);
        assert_eq!(BACKENDS[0].make.is_some(), cfg!(feature = "docker"));
        assert_eq!(BACKENDS[1].make.is_some(), cfg!(feature = "smolmachines"));
    }
}
