//! Errors of the core crate.
//!
//! Every variant carries what the user needs to act: which file, which
//! command, and (through [`Error::fix`]) what to do. Library code never
//! prints or exits; the CLI maps [`Error::kind`] to an exit code.

use camino::Utf8PathBuf;

/// Result alias for bottle-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Broad class of an error, used by the CLI to pick an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A manifest or a command-line argument is wrong (exit 2).
    Usage,
    /// A backend cannot be used on this host (exit 3).
    Unavailable,
    /// The operator or the policy refused (exit 4).
    Refused,
    /// Something failed while running (exit 1).
    Runtime,
}

/// An error from bottle-core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A manifest failed to parse or validate.
    #[error("{file}{}: {message}", location(*line, *column))]
    Manifest {
        /// The manifest file.
        file: Utf8PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
        /// What to do about it.
        fix: String,
    },
    /// No manifest with this name exists.
    #[error("no {kind} named `{name}` (looked in {})", searched.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// `"agent"` or `"bottle"`.
        kind: &'static str,
        /// The requested name.
        name: String,
        /// Every path that was tried.
        searched: Vec<Utf8PathBuf>,
        /// Names that do exist, for the hint.
        available: Vec<String>,
    },
    /// A `${VAR}` reference names a variable the host does not have.
    #[error("{file}: `{key}` needs host environment variable `{var}`, which is not set")]
    MissingHostVar {
        /// The manifest that refers to it.
        file: Utf8PathBuf,
        /// The key whose value uses it.
        key: String,
        /// The missing variable.
        var: String,
    },
    /// A `?prompt` value could not be answered.
    #[error("`{key}` must be answered interactively, but {why}")]
    Prompt {
        /// The env key asked for.
        key: String,
        /// Why no answer could be had.
        why: String,
    },
    /// A program could not be started at all.
    #[error("could not run `{program}`: {source}")]
    Spawn {
        /// The program name.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}){}", tail(stderr_tail))]
    CommandFailed {
        /// The command as rendered (secrets redacted).
        command: String,
        /// Exit status text.
        status: String,
        /// The last lines of stderr, secrets scrubbed.
        stderr_tail: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`"writing"`, `"reading"`…).
        action: &'static str,
        /// The path.
        path: Utf8PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A state dir is unusable (corrupt metadata, missing files).
    #[error("state of bottle `{identity}` is unusable: {why}")]
    State {
        /// The identity.
        identity: String,
        /// What is wrong.
        why: String,
    },
    /// No bottle with this identity exists.
    #[error("no bottle `{identity}`")]
    NoSuchBottle {
        /// The identity asked for.
        identity: String,
    },
    /// No permission request with this id (or unique prefix) exists.
    #[error("no permission request `{id}`")]
    NoSuchRequest {
        /// The id asked for.
        id: String,
    },
    /// An id prefix matches more than one bottle or request.
    #[error("`{prefix}` matches {} {what}s: {}", matches.len(), matches.join(", "))]
    Ambiguous {
        /// `"bottle"` or `"request"`.
        what: &'static str,
        /// The prefix given.
        prefix: String,
        /// Every full id it matches.
        matches: Vec<String>,
    },
    /// The backend name is not one bottle knows.
    #[error("unknown backend `{name}` (known: {})", known.join(", "))]
    UnknownBackend {
        /// What was asked for.
        name: String,
        /// Backends bottle knows.
        known: Vec<String>,
    },
    /// The backend exists but this build left it out.
    #[error("backend `{name}` is not compiled into this build (enable feature `{feature}`)")]
    BackendNotCompiled {
        /// The backend.
        name: String,
        /// The cargo feature that adds it.
        feature: String,
    },
    /// The backend cannot be used here.
    #[error("backend `{backend}` is unavailable: {why}")]
    Unavailable {
        /// The backend.
        backend: String,
        /// Why.
        why: String,
        /// How to fix it.
        fix: String,
    },
    /// The operator or the policy declined.
    #[error("{why}")]
    Refused {
        /// Why.
        why: String,
        /// What to do.
        fix: String,
    },
    /// Teardown ran and some undo steps failed. Every failure is listed.
    #[error("cleanup left {} problem(s): {}", .0.len(), .0.iter().map(|(s, e)| format!("{s}: {e}")).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<(String, Error)>),
    /// A launch step failed; teardown ran (its own failures are listed).
    #[error("{step} failed: {source}{}", cleanup_note(cleanup))]
    Launch {
        /// The failed step.
        step: String,
        /// The failure.
        #[source]
        source: Box<Error>,
        /// Failures of the rollback itself.
        cleanup: Vec<(String, Error)>,
    },
    /// The launch was interrupted (Ctrl-C); everything it made was removed.
    #[error("interrupted during {step}; everything created so far was removed")]
    Interrupted {
        /// The step that was running.
        step: String,
    },
    /// Anything else, with a hint.
    #[error("{message}")]
    Other {
        /// What went wrong.
        message: String,
        /// What to do.
        fix: Option<String>,
    },
}

fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn tail(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

fn cleanup_note(cleanup: &[(String, Error)]) -> String {
    if cleanup.is_empty() {
        String::new()
    } else {
        format!(
            " (and cleanup left {} problem(s): {})",
            cleanup.len(),
            cleanup
                .iter()
                .map(|(s, e)| format!("{s}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

impl Error {
    /// Shorthand for an [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<Utf8PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for an [`Error::Other`] with a fix.
    pub fn other(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Error::Other {
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// The error's class (the CLI turns it into an exit code).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Manifest { .. }
            | Error::NotFound { .. }
            | Error::MissingHostVar { .. }
            | Error::Prompt { .. }
            | Error::UnknownBackend { .. }
            | Error::NoSuchBottle { .. }
            | Error::NoSuchRequest { .. }
            | Error::Ambiguous { .. } => ErrorKind::Usage,
            Error::BackendNotCompiled { .. } | Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Refused { .. } => ErrorKind::Refused,
            Error::Launch { source, .. } => source.kind(),
            _ => ErrorKind::Runtime,
        }
    }

    /// One line saying what the user should do, when there is something to say.
    pub fn fix(&self) -> Option<String> {
        Some(match self {
            Error::Manifest { fix, .. } => fix.clone(),
            Error::NotFound {
                kind, available, ..
            } => {
                if available.is_empty() {
                    format!("create one with `bottle init`, or write the {kind} manifest yourself")
                } else {
                    format!("available {kind}s: {}", available.join(", "))
                }
            }
            Error::MissingHostVar { var, .. } => {
                format!("export {var}=... in the shell that runs bottle, or change the manifest")
            }
            Error::Prompt { .. } => "run bottle from a terminal so it can ask".into(),
            Error::Spawn { program, .. } => format!("install `{program}` or put it on PATH"),
            Error::CommandFailed { .. } => "rerun with --verbose to see every command".into(),
            Error::Io { .. } => "check the path's permissions and free disk space".into(),
            Error::State { identity, .. } => format!(
                "inspect $BOTTLE_HOME/state/{identity}/; `bottle rm {identity}` removes it, `bottle gc` cleans its resources"
            ),
            Error::NoSuchBottle { .. } => "`bottle ls` lists the bottles that exist".into(),
            Error::NoSuchRequest { .. } => {
                "`bottle queue --all` lists requests (any unique prefix of an id works)".into()
            }
            Error::Ambiguous { what, .. } => {
                format!("give more of the {what} id, enough to match only one")
            }
            Error::UnknownBackend { known, .. } => format!("use one of: {}", known.join(", ")),
            Error::BackendNotCompiled { feature, .. } => {
                format!("rebuild with `cargo install bottle-cli --features {feature}`")
            }
            Error::Unavailable { fix, .. } => fix.clone(),
            Error::Refused { fix, .. } => fix.clone(),
            Error::Teardown(_) => "run `bottle gc` to remove what is left".into(),
            Error::Launch { source, cleanup, .. } => {
                if cleanup.is_empty() {
                    return source.fix();
                }
                "run `bottle gc` to remove what is left".into()
            }
            Error::Interrupted { .. } => "start it again when ready".into(),
            Error::Other { fix, .. } => return fix.clone(),
        })
    }
}
