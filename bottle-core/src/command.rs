//! The process seam: every external command bottle runs is a [`CommandSpec`]
//! executed by a [`CommandRunner`].
//!
//! Owns how commands are described, rendered (redacted) and run. Secrets may
//! reach a child only through its environment or stdin, both typed as
//! [`Secret`]-capable so that rendering never shows them; arguments are plain
//! strings and must never carry a secret. [`DuctRunner`] runs for real;
//! [`RecordingRunner`] records argv for snapshots and answers from a script.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

use camino::Utf8PathBuf;

use crate::error::{Error, Result};
use crate::secret::{Secret, REDACTED};

/// A value in a child's environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// A value that may be shown.
    Plain(String),
    /// A value that must not be shown.
    Secret(Secret),
}

/// What a child reads on stdin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum Stdin {
    /// Bytes that may be shown (rendered as their length).
    Bytes(Vec<u8>),
    /// A secret (rendered redacted).
    Secret(Secret),
    /// Bytes that carry secrets (an archive holding a secret file):
    /// rendered redacted, and the secrets they hold are scrubbed from
    /// captured output like any other.
    SecretBytes(SecretBytes),
}

/// Bytes that hold secrets: `Debug`, `Display` and `Serialize` show only
/// [`REDACTED`] and the length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes {
    bytes: Vec<u8>,
    holds: Vec<Secret>,
}

impl SecretBytes {
    /// `bytes`, which contain each of `holds`.
    pub fn new(bytes: Vec<u8>, holds: Vec<Secret>) -> Self {
        Self { bytes, holds }
    }

    /// The real bytes: only for the child's stdin.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// The secrets the bytes hold.
    pub fn holds(&self) -> &[Secret] {
        &self.holds
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{REDACTED} ({} bytes)", self.bytes.len())
    }
}

impl serde::Serialize for SecretBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// One external command.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommandSpec {
    /// Program name or path.
    pub program: String,
    /// Arguments. Never a secret.
    pub args: Vec<String>,
    /// Extra environment for the child (inherits the rest).
    pub env: BTreeMap<String, EnvValue>,
    /// Stdin, if any.
    pub stdin: Option<Stdin>,
    /// Working directory, if not the current one.
    pub cwd: Option<Utf8PathBuf>,
    /// Non-zero exit is not an error (probes, idempotent removals).
    pub allow_failure: bool,
}

impl CommandSpec {
    /// A command with no args.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            stdin: None,
            cwd: None,
            allow_failure: false,
        }
    }

    /// Append one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, it: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(it.into_iter().map(Into::into));
        self
    }

    /// Set a plain env var for the child.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), EnvValue::Plain(v.into()));
        self
    }

    /// Set a secret env var for the child (rendered redacted).
    pub fn secret_env(mut self, k: impl Into<String>, v: Secret) -> Self {
        self.env.insert(k.into(), EnvValue::Secret(v));
        self
    }

    /// Feed bytes on stdin.
    pub fn stdin_bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Stdin::Bytes(b.into()));
        self
    }

    /// Run in this directory.
    pub fn cwd(mut self, dir: impl Into<Utf8PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Treat a non-zero exit as a normal outcome.
    pub fn allow_failure(mut self) -> Self {
        self.allow_failure = true;
        self
    }

    /// Every secret this command carries, for scrubbing captured output.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut out: Vec<&Secret> = self
            .env
            .values()
            .filter_map(|v| match v {
                EnvValue::Secret(s) => Some(s),
                EnvValue::Plain(_) => None,
            })
            .collect();
        match &self.stdin {
            Some(Stdin::Secret(s)) => out.push(s),
            Some(Stdin::SecretBytes(b)) => out.extend(b.holds()),
            _ => {}
        }
        out
    }

    /// The argv as one shell-like line (no env, no stdin).
    pub fn argv_line(&self) -> String {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quote a word for display the way a POSIX shell would need it.
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%^".contains(c))
    {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

impl fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(dir) = &self.cwd {
            write!(f, "(cd {} && ", shell_quote(dir.as_str()))?;
        }
        for (k, v) in &self.env {
            match v {
                EnvValue::Plain(p) => write!(f, "{k}={} ", shell_quote(p))?,
                EnvValue::Secret(_) => write!(f, "{k}={REDACTED} ")?,
            }
        }
        f.write_str(&self.argv_line())?;
        match &self.stdin {
            Some(Stdin::Bytes(b)) => write!(f, " <<< [{} bytes]", b.len())?,
            Some(Stdin::Secret(_)) => write!(f, " <<< {REDACTED}")?,
            Some(Stdin::SecretBytes(b)) => {
                write!(f, " <<< {REDACTED} [{} bytes]", b.expose().len())?
            }
            None => {}
        }
        if self.cwd.is_some() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// The captured result of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code (`-1` if killed by a signal).
    pub code: i32,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8, secrets scrubbed).
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Runs commands. Object-safe so backends take `&dyn CommandRunner`.
pub trait CommandRunner: Send + Sync {
    /// Run to completion capturing output. A non-zero exit is
    /// [`Error::CommandFailed`] unless `spec.allow_failure`.
    fn output(&self, spec: &CommandSpec) -> Result<Output>;

    /// Run with the terminal attached (attach, exec); returns the exit code.
    fn interactive(&self, spec: &CommandSpec) -> Result<i32>;
}

fn stderr_tail(stderr: &str, secrets: &[&Secret]) -> String {
    let mut text: String = {
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        let start = lines.len().saturating_sub(5);
        lines[start..].join("\n")
    };
    for s in secrets {
        text = s.scrub(&text);
    }
    text
}

/// Build the failure error for a finished command.
pub fn failure(spec: &CommandSpec, out: &Output) -> Error {
    Error::CommandFailed {
        command: spec.to_string(),
        status: format!("exit code {}", out.code),
        stderr_tail: stderr_tail(&out.stderr, &spec.secrets()),
    }
}

/// The real runner, on top of `duct`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DuctRunner;

impl DuctRunner {
    fn expression(spec: &CommandSpec) -> duct::Expression {
        let mut e = duct::cmd(&spec.program, &spec.args);
        for (k, v) in &spec.env {
            let val = match v {
                EnvValue::Plain(p) => p.as_str(),
                EnvValue::Secret(s) => s.expose(),
            };
            e = e.env(k, val);
        }
        match &spec.stdin {
            Some(Stdin::Bytes(b)) => e = e.stdin_bytes(b.clone()),
            Some(Stdin::Secret(s)) => e = e.stdin_bytes(s.expose().as_bytes().to_vec()),
            Some(Stdin::SecretBytes(b)) => e = e.stdin_bytes(b.expose().to_vec()),
            None => {}
        }
        if let Some(dir) = &spec.cwd {
            e = e.dir(dir.as_std_path());
        }
        e
    }
}

impl CommandRunner for DuctRunner {
    fn output(&self, spec: &CommandSpec) -> Result<Output> {
        tracing::debug!(command = %spec, "run");
        let out = Self::expression(spec)
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|source| Error::Spawn {
                program: spec.program.clone(),
                source,
            })?;
        let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        for s in spec.secrets() {
            stderr = s.scrub(&stderr);
        }
        let out = Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        };
        if !out.success() && !spec.allow_failure {
            return Err(failure(spec, &out));
        }
        Ok(out)
    }

    fn interactive(&self, spec: &CommandSpec) -> Result<i32> {
        tracing::debug!(command = %spec, "run interactive");
        let out = Self::expression(spec)
            .unchecked()
            .run()
            .map_err(|source| Error::Spawn {
                program: spec.program.clone(),
                source,
            })?;
        Ok(out.status.code().unwrap_or(-1))
    }
}

/// A scripted answer for [`RecordingRunner`].
#[derive(Debug, Clone)]
struct Reply {
    /// Matches when the rendered argv line starts with this.
    prefix: String,
    output: Output,
    /// Answer only once.
    once: bool,
}

/// Records every command instead of running it; answers from a script.
///
/// Unscripted commands succeed with empty output. Use it to snapshot what a
/// backend would run; it never stands in for an integration test.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    calls: Mutex<Vec<CommandSpec>>,
    replies: Mutex<VecDeque<Reply>>,
}

impl RecordingRunner {
    /// A runner with no scripted answers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer commands whose argv line starts with `prefix` with this output
    /// (every time).
    pub fn reply(&self, prefix: &str, code: i32, stdout: &str) -> &Self {
        self.push(prefix, code, stdout, false)
    }

    /// Answer the next command whose argv line starts with `prefix` once.
    pub fn reply_once(&self, prefix: &str, code: i32, stdout: &str) -> &Self {
        self.push(prefix, code, stdout, true)
    }

    fn push(&self, prefix: &str, code: i32, stdout: &str, once: bool) -> &Self {
        self.replies.lock().unwrap().push_back(Reply {
            prefix: prefix.to_owned(),
            output: Output {
                code,
                stdout: stdout.to_owned(),
                stderr: if code == 0 {
                    String::new()
                } else {
                    "scripted failure".into()
                },
            },
            once,
        });
        self
    }

    /// Every recorded command, in order.
    pub fn calls(&self) -> Vec<CommandSpec> {
        self.calls.lock().unwrap().clone()
    }

    /// Every recorded command rendered (redacted), one per line.
    pub fn transcript(&self) -> String {
        self.calls()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn answer(&self, spec: &CommandSpec) -> Output {
        self.calls.lock().unwrap().push(spec.clone());
        let line = spec.argv_line();
        let mut replies = self.replies.lock().unwrap();
        if let Some(i) = replies.iter().position(|r| line.starts_with(&r.prefix)) {
            let r = replies[i].clone();
            if r.once {
                replies.remove(i);
            }
            return r.output;
        }
        Output::default()
    }
}

impl CommandRunner for RecordingRunner {
    fn output(&self, spec: &CommandSpec) -> Result<Output> {
        let out = self.answer(spec);
        if !out.success() && !spec.allow_failure {
            return Err(failure(spec, &out));
        }
        Ok(out)
    }

    fn interactive(&self, spec: &CommandSpec) -> Result<i32> {
        Ok(self.answer(spec).code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_render() {
        let token = Secret::new("tok-live-1234567890");
        let spec = CommandSpec::new("docker")
            .args(["run", "--env", "API_TOKEN", "img:1"])
            .secret_env("API_TOKEN", token.clone())
            .env("PLAIN", "yes");
        let shown = format!("{spec} {spec:?} {}", serde_json::to_string(&spec).unwrap());
        assert!(!shown.contains(token.expose()), "{shown}");
        assert!(shown.contains("API_TOKEN=[REDACTED]"), "{shown}");
        assert!(shown.contains("PLAIN=yes"));

        let rec = RecordingRunner::new();
        rec.output(&spec).unwrap();
        assert!(!rec.transcript().contains(token.expose()));
        assert!(!format!("{:?}", rec.calls()).contains(token.expose()));
    }

    #[test]
    fn secret_bytes_on_stdin_never_render_and_reach_the_child_whole() {
        let token = Secret::new("tok-archive-0987654321");
        let bytes = format!("export T='{}'\n", token.expose()).into_bytes();
        let spec =
            CommandSpec::new("sh").args(["-c", "cat; echo \"oops $(cat /dev/null)\" >&2; exit 3"]);
        let mut spec = spec;
        spec.stdin = Some(Stdin::SecretBytes(SecretBytes::new(
            bytes.clone(),
            vec![token.clone()],
        )));
        let shown = format!("{spec} {spec:?} {}", serde_json::to_string(&spec).unwrap());
        assert!(!shown.contains(token.expose()), "{shown}");
        assert!(shown.contains(REDACTED), "{shown}");
        assert_eq!(spec.secrets(), vec![&token]);
        let out = DuctRunner.output(&spec.clone().allow_failure()).unwrap();
        assert_eq!(out.stdout.as_bytes(), &bytes[..]);
    }

    #[test]
    fn failures_scrub_stderr_and_render_redacted() {
        let token = Secret::new("s3cr3t-value-xyz");
        let spec = CommandSpec::new("sh")
            .args(["-c", "echo \"oops $T\" >&2; exit 3"])
            .secret_env("T", token.clone());
        let err = DuctRunner.output(&spec).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(token.expose()), "{text}");
        assert!(text.contains("oops [REDACTED]"), "{text}");
        assert!(text.contains("exit code 3"), "{text}");
    }

    #[test]
    fn spawn_errors_name_the_program() {
        let err = DuctRunner
            .output(&CommandSpec::new("definitely-not-a-program-xyz"))
            .unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }));
        assert_eq!(
            err.fix().unwrap(),
            "install `definitely-not-a-program-xyz` or put it on PATH"
        );
    }

    #[test]
    fn recording_runner_answers_from_script() {
        let rec = RecordingRunner::new();
        rec.reply_once("docker info", 1, "");
        rec.reply("docker version", 0, "28.2.2\n");
        assert!(rec.output(&CommandSpec::new("docker").arg("info")).is_err());
        assert!(rec.output(&CommandSpec::new("docker").arg("info")).is_ok());
        let v = rec
            .output(&CommandSpec::new("docker").arg("version"))
            .unwrap();
        assert_eq!(v.stdout, "28.2.2\n");
        assert_eq!(rec.calls().len(), 3);
    }
}
