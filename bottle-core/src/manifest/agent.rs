//! Agent files: parsed and checked, with the trust rules of an agent (it
//! never carries bottle keys; a repo agent sets only literal env values and
//! reads its prompt only from inside the repository).

use std::fs;

use camino::{Utf8Path, Utf8PathBuf};

use super::diagnostics::{bad_name, parse, Checker};
use super::env::{validate_env, EnvAuthor};
use super::{valid_name, AgentFile, AgentSource, LoadedAgent, BOTTLE_KEYS};
use crate::error::Result;

/// Parse and validate an agent from text; `path` names it in errors and
/// anchors a relative `prompt_file` (used for files and in-memory manifests).
/// Its `skills` are looked for only in the repository (an in-memory agent
/// has no `$BOTTLE_HOME`; [`Loader`](super::Loader) also looks in `$BOTTLE_HOME/skills`).
pub fn agent_from_text(path: &Utf8Path, text: &str, source: AgentSource) -> Result<LoadedAgent> {
    agent_from_text_in(path, text, source, None)
}

/// [`agent_from_text`], with `$BOTTLE_HOME/skills` to look for skills in.
pub(super) fn agent_from_text_in(
    path: &Utf8Path,
    text: &str,
    source: AgentSource,
    home_skills: Option<&Utf8Path>,
) -> Result<LoadedAgent> {
    let ck = Checker { path, text };
    let table: toml::Table = parse(path, text)?;
    let bottle_keys: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| BOTTLE_KEYS.contains(k) && *k != "env")
        .collect();
    if !bottle_keys.is_empty() {
        let fix = match source {
            AgentSource::Repo => "a repo agent may only name a bottle (`bottle = \"<name>\"`); policy lives in $BOTTLE_HOME/bottles/<name>.toml, which only the operator writes",
            AgentSource::Home => "move these keys into a bottle file in $BOTTLE_HOME/bottles/ and reference it with `bottle = \"<name>\"`",
        };
        return Err(ck.fail(
            bottle_keys[0],
            format!(
                "an agent file cannot carry bottle keys ({})",
                bottle_keys.join(", ")
            ),
            fix,
        ));
    }
    let file: AgentFile = parse(path, text)?;
    let name = path.file_stem().unwrap_or_default().to_owned();
    if !valid_name(&name) {
        return Err(bad_name("agent", &name, Some(path)));
    }
    if !valid_name(&file.bottle) {
        return Err(bad_name("bottle", &file.bottle, Some(path)));
    }
    if file.prompt.is_some() && file.prompt_file.is_some() {
        return Err(ck.fail(
            "",
            "`prompt` and `prompt_file` are both set".into(),
            "keep one of them",
        ));
    }
    if let Some(pf) = &file.prompt_file {
        if let Err((message, fix)) = prompt_path(path, pf, source) {
            return Err(ck.fail("prompt_file", message, fix));
        }
    }
    if let Some(cmd) = &file.command {
        if let Some(rule) = cmd.iter().find_map(|a| bottle_dlp::pattern_hit(a)) {
            return Err(ck.fail(
                "command",
                format!("`command` carries a literal credential (matches `{rule}`)"),
                "never put a secret in a command: hold it with an egress route's auth (token = \"${VAR}\") or a bottle env entry { secret = \"${VAR}\" }",
            ));
        }
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(ck.fail(
                "",
                "`command` is empty".into(),
                "write the program and its arguments, e.g. command = [\"bash\", \"-lc\", \"./run.sh\"]",
            ));
        }
    }
    if let Some(env) = &file.env {
        let author = match source {
            AgentSource::Home => EnvAuthor::Operator,
            AgentSource::Repo => EnvAuthor::Repo,
        };
        validate_env(path, text, env, author)?;
    }
    let skills = crate::skills::find_all(
        path,
        source,
        file.skills.as_deref().unwrap_or_default(),
        home_skills,
    )
    .map_err(|(message, fix)| ck.fail("skills", message, fix))?;
    Ok(LoadedAgent {
        name,
        path: path.to_owned(),
        source,
        file,
        skills,
    })
}

/// The file an agent's `prompt_file` names, checked: it must exist, and for
/// a repo agent it must be a relative path without `..` whose real location
/// (symlinks resolved) is inside the repository (SPEC §1, S11 in
/// docs/security.md). Errors are `(message, fix)`.
pub(crate) fn prompt_path(
    agent_file: &Utf8Path,
    prompt_file: &str,
    source: AgentSource,
) -> std::result::Result<Utf8PathBuf, (String, String)> {
    let dir = agent_file.parent().unwrap_or(Utf8Path::new("."));
    let rel = Utf8Path::new(prompt_file);
    let repo_fix = || {
        "keep the prompt in the repository under .bottle/agents/ and name it relative to the agent file, e.g. prompt_file = \"prompt.md\"".to_owned()
    };
    if source == AgentSource::Repo {
        if rel.has_root() || rel.is_absolute() {
            return Err((
                format!("`prompt_file = \"{prompt_file}\"` is an absolute path; a repo agent may only use files inside the repository"),
                repo_fix(),
            ));
        }
        if rel
            .components()
            .any(|c| matches!(c, camino::Utf8Component::ParentDir))
        {
            return Err((
                format!("`prompt_file = \"{prompt_file}\"` climbs with `..`; a repo agent may only use files inside the repository"),
                repo_fix(),
            ));
        }
    }
    let p = dir.join(rel);
    if !p.is_file() {
        return Err((
            format!("`prompt_file` {p} does not exist"),
            "create the file or fix the path (relative to the agent file)".into(),
        ));
    }
    if source == AgentSource::Repo {
        // The repository is two levels above `.bottle/agents/`; anything
        // else (an in-memory agent) is confined to its own directory.
        let root = match dir.parent().and_then(Utf8Path::parent) {
            Some(r) if dir.ends_with(".bottle/agents") => r,
            _ => dir,
        };
        let real = |p: &Utf8Path| fs::canonicalize(p).ok();
        match (real(root), real(&p)) {
            (Some(root), Some(target)) if target.starts_with(&root) => {
                return Ok(Utf8PathBuf::from_path_buf(target).unwrap_or(p));
            }
            _ => {
                return Err((
                    format!("`prompt_file = \"{prompt_file}\"` resolves (through a symlink) to a file outside the repository"),
                    repo_fix(),
                ))
            }
        }
    }
    Ok(p)
}
