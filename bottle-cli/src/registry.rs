//! The static backend registry, built from cargo features (sqlx `Any` style):
//! an unknown name lists the known ones; a known name that this build left
//! out says which feature adds it.

use bottle_core::{Backend, Result};

pub use bottle_lifecycle::{Entry, Registry};

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

/// The registry of this build.
pub fn registry() -> Registry {
    Registry(BACKENDS)
}

/// Look a backend up by name.
pub fn get(name: &str) -> Result<Box<dyn Backend>> {
    registry().get(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are `bottle_lifecycle::registry`'s (tested there);
    /// here, the exit codes they map to, over this build's table with
    /// every backend left out.
    #[test]
    fn unknown_and_compiled_out_backends_exit_as_usage_and_unavailable() {
        let compiled_out = Registry(
            BACKENDS
                .iter()
                .map(|e| Entry { make: None, ..*e })
                .collect::<Vec<_>>()
                .leak(),
        );
        let unknown = compiled_out.get("nosuch").err().unwrap();
        assert_eq!(crate::exit_code(&unknown), 2, "{unknown}");
        let left_out = compiled_out.get("smolmachines").err().unwrap();
        assert_eq!(crate::exit_code(&left_out), 3, "{left_out}");
    }

    #[test]
    fn the_registry_lists_both_backends_whatever_the_features() {
        let names: Vec<_> = BACKENDS.iter().map(|e| e.name).collect();
        assert_eq!(names, ["docker", "smolmachines"]);
        assert_eq!(BACKENDS[0].make.is_some(), cfg!(feature = "docker"));
        assert_eq!(BACKENDS[1].make.is_some(), cfg!(feature = "smolmachines"));
    }
}
