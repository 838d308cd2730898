//! Skills (README "Skills"): directories an agent lists with
//! `skills = ["name", ...]`, copied into the agent where its CLI reads them.
//!
//! A skill `<name>` is found in `$BOTTLE_HOME/skills/<name>/` or, for a repo
//! agent, first in the repository's `.bottle/skills/<name>/`. A repo skill
//! follows the repo-agent trust rules of `prompt_file` (SPEC §1, S11 in
//! docs/security.md): its real location, and the real location of every file
//! in it (symlinks resolved), is inside the repository. A skill needs a
//! `SKILL.md` (the format both Claude Code and Codex read).
//!
//! Where a skill lands: Claude Code reads `~/.claude/skills/<name>/`, Codex
//! reads user skills from `~/.agents/skills/<name>/` (its "Agent Skills"
//! docs); the shell template and a user Dockerfile get both.

use std::fs;

use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::manifest::{AgentSource, Template};
use crate::plan::{BottlePlan, ImageSource};
use crate::prepare::{AgentFile, Wiring};

/// At most this many files over every skill of one agent.
pub const MAX_SKILL_FILES: usize = 2000;
/// At most this many bytes over every skill of one agent.
pub const MAX_SKILL_BYTES: u64 = 32 << 20;
/// Deepest directory nesting inside a skill.
const MAX_DEPTH: usize = 16;

/// Where a skill was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SkillOrigin {
    /// `$BOTTLE_HOME/skills/<name>/` (the operator's).
    Home,
    /// `<repo>/.bottle/skills/<name>/` (the repository's, confined to it).
    Repo,
}

/// A skill an agent names, found and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillSource {
    /// The name in `skills = [...]`.
    pub name: String,
    /// Its directory (canonical).
    pub dir: Utf8PathBuf,
    /// Where it was found.
    pub origin: SkillOrigin,
    /// The directory every file of the skill must resolve into (the
    /// canonical repository for a repo skill); `None` for a home skill.
    #[serde(skip)]
    pub confine: Option<Utf8PathBuf>,
}

/// One skill in a plan: its source and where it lands in the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkillPlan {
    /// Name.
    pub name: String,
    /// Host directory (canonical).
    pub source: Utf8PathBuf,
    /// `home` or `repo`.
    pub origin: SkillOrigin,
    /// Directories in the agent (`~` = the agent's home).
    pub targets: Vec<String>,
    /// Confinement root (see [`SkillSource::confine`]).
    #[serde(skip)]
    pub confine: Option<Utf8PathBuf>,
}

/// Where skill `name` lands for this image: Claude Code's
/// `~/.claude/skills/`, Codex's `~/.agents/skills/`, both for anything else.
pub fn targets(image: &ImageSource, name: &str) -> Vec<String> {
    let claude = format!("~/.claude/skills/{name}");
    let codex = format!("~/.agents/skills/{name}");
    match image {
        ImageSource::Template(Template::Claude) => vec![claude],
        ImageSource::Template(Template::Codex) => vec![codex],
        _ => vec![claude, codex],
    }
}

/// The repository an agent file belongs to: two levels above
/// `.bottle/agents/`, else the agent file's own directory.
pub(crate) fn repo_root(agent_file: &Utf8Path) -> Utf8PathBuf {
    let dir = agent_file.parent().unwrap_or(Utf8Path::new("."));
    match dir.parent().and_then(Utf8Path::parent) {
        Some(r) if dir.ends_with(".bottle/agents") => r.to_owned(),
        _ => dir.to_owned(),
    }
}

/// Find and check every skill an agent names. `home_skills` is
/// `$BOTTLE_HOME/skills` (`None` for an in-memory agent, which then finds
/// only repo skills). Errors are `(message, fix)`.
pub(crate) fn find_all(
    agent_file: &Utf8Path,
    source: AgentSource,
    names: &[String],
    home_skills: Option<&Utf8Path>,
) -> std::result::Result<Vec<SkillSource>, (String, String)> {
    let mut out: Vec<SkillSource> = Vec::new();
    for name in names {
        if !crate::manifest::valid_name(name) {
            return Err((
                format!("`skills` names `{name}`, which is not a valid skill name"),
                "skill names use lowercase letters, digits, `-` and `_` (at most 48); the name is the directory".into(),
            ));
        }
        if out.iter().any(|s| &s.name == name) {
            return Err((
                format!("`skills` names `{name}` twice"),
                "list each skill once".into(),
            ));
        }
        out.push(find(agent_file, source, name, home_skills)?);
    }
    Ok(out)
}

fn find(
    agent_file: &Utf8Path,
    source: AgentSource,
    name: &str,
    home_skills: Option<&Utf8Path>,
) -> std::result::Result<SkillSource, (String, String)> {
    let mut candidates: Vec<(Utf8PathBuf, SkillOrigin)> = Vec::new();
    let root = repo_root(agent_file);
    if source == AgentSource::Repo {
        candidates.push((
            root.join(".bottle").join("skills").join(name),
            SkillOrigin::Repo,
        ));
    }
    if let Some(h) = home_skills {
        candidates.push((h.join(name), SkillOrigin::Home));
    }
    let real = |p: &Utf8Path| {
        fs::canonicalize(p)
            .ok()
            .and_then(|p| Utf8PathBuf::from_path_buf(p).ok())
    };
    for (dir, origin) in &candidates {
        if fs::symlink_metadata(dir).is_err() {
            continue;
        }
        let Some(canonical) = real(dir).filter(|p| p.is_dir()) else {
            return Err((
                format!("skill `{name}`: {dir} is not a directory"),
                format!("make {dir} a directory holding the skill's SKILL.md"),
            ));
        };
        let confine = match origin {
            SkillOrigin::Repo => match real(&root) {
                Some(r) if canonical.starts_with(&r) => Some(r),
                _ => {
                    return Err((
                        format!("skill `{name}`: {dir} resolves (through a symlink) outside the repository"),
                        "a repo agent's skills live inside the repository under .bottle/skills/<name>/; put shared skills in $BOTTLE_HOME/skills/".into(),
                    ))
                }
            },
            SkillOrigin::Home => None,
        };
        if !canonical.join("SKILL.md").is_file() {
            return Err((
                format!("skill `{name}`: {dir} has no SKILL.md"),
                "a skill is a directory with a SKILL.md (name and description front matter, then instructions)".into(),
            ));
        }
        return Ok(SkillSource {
            name: name.to_owned(),
            dir: canonical,
            origin: *origin,
            confine,
        });
    }
    let looked: Vec<String> = candidates.iter().map(|(p, _)| p.to_string()).collect();
    let looked = if looked.is_empty() {
        "nowhere: an in-memory agent has no $BOTTLE_HOME".to_owned()
    } else {
        looked.join(" and ")
    };
    Err((
        format!("skill `{name}` not found (looked in {looked})"),
        format!(
            "create the skill directory {} with its SKILL.md, or remove `{name}` from `skills`",
            candidates
                .last()
                .map_or_else(|| format!("skills/{name}"), |(p, _)| p.to_string())
        ),
    ))
}

/// Every file of the plan's skills as agent files (walked now, so a skill
/// edited since `plan` is copied as it is at start). Symlinks are followed;
/// in a repo skill each must resolve inside the repository. Empty
/// directories are not copied.
pub fn agent_files(plan: &BottlePlan) -> Result<Vec<AgentFile>> {
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for s in &plan.provider.skills {
        let mut files = Vec::new();
        walk(s, &s.source, Utf8Path::new(""), 0, &mut files, &mut bytes)?;
        for t in &s.targets {
            for (rel, host, mode) in &files {
                out.push(AgentFile {
                    host: host.clone(),
                    guest: format!("{t}/{rel}"),
                    mode: *mode,
                });
            }
        }
    }
    Ok(out)
}

/// `wiring` plus the plan's skill files: what a backend places into the
/// agent.
pub fn with_skills(plan: &BottlePlan, wiring: &Wiring) -> Result<Wiring> {
    let mut w = wiring.clone();
    w.agent_files.extend(agent_files(plan)?);
    Ok(w)
}

fn skill_error(s: &SkillPlan, message: String, fix: &str) -> Error {
    Error::other(format!("skill `{}`: {message}", s.name), fix)
}

fn walk(
    s: &SkillPlan,
    dir: &Utf8Path,
    rel: &Utf8Path,
    depth: usize,
    out: &mut Vec<(String, Utf8PathBuf, u32)>,
    bytes: &mut u64,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if depth > MAX_DEPTH {
        return Err(skill_error(
            s,
            format!("{dir} is nested more than {MAX_DEPTH} directories deep (a symlink loop?)"),
            "flatten the skill or remove the symlink loop",
        ));
    }
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io("reading", dir.to_owned(), e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::io("reading", dir.to_owned(), e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            return Err(skill_error(
                s,
                format!("{dir} holds a file whose name is not UTF-8"),
                "rename it",
            ));
        };
        let path = dir.join(&name);
        let real = fs::canonicalize(&path)
            .ok()
            .and_then(|p| Utf8PathBuf::from_path_buf(p).ok())
            .ok_or_else(|| {
                skill_error(
                    s,
                    format!("{path} cannot be resolved (a dangling symlink?)"),
                    "remove it or fix its target",
                )
            })?;
        if let Some(root) = &s.confine {
            if !real.starts_with(root) {
                return Err(skill_error(
                    s,
                    format!("{path} resolves (through a symlink) outside the repository"),
                    "a repo skill may only hold files inside the repository",
                ));
            }
        }
        let meta = fs::metadata(&real).map_err(|e| Error::io("reading", real.clone(), e))?;
        let rel = rel.join(&name);
        if meta.is_dir() {
            walk(s, &path, &rel, depth + 1, out, bytes)?;
        } else if meta.is_file() {
            *bytes += meta.len();
            if out.len() >= MAX_SKILL_FILES || *bytes > MAX_SKILL_BYTES {
                return Err(skill_error(
                    s,
                    format!(
                        "the agent's skills exceed {MAX_SKILL_FILES} files or {} MiB",
                        MAX_SKILL_BYTES >> 20
                    ),
                    "keep skills small (instructions and scripts); put large data in the workspace",
                ));
            }
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            out.push((rel.to_string(), real, mode));
        } else {
            return Err(skill_error(
                s,
                format!("{path} is neither a file nor a directory"),
                "remove it from the skill",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skill(dir: &Utf8Path, name: &str) -> Utf8PathBuf {
        let d = dir.join(name);
        fs::create_dir_all(d.join("scripts")).unwrap();
        fs::write(d.join("SKILL.md"), "---\nname: x\ndescription: y\n---\n").unwrap();
        fs::write(d.join("scripts/run.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.join("scripts/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn tmp() -> (tempfile::TempDir, Utf8PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(fs::canonicalize(t.path()).unwrap()).unwrap();
        (t, p)
    }

    #[test]
    fn a_repo_agent_finds_its_repo_skill_first_then_home() {
        let (_t, root) = tmp();
        let repo = root.join("repo");
        let home = root.join("home/skills");
        skill(&repo.join(".bottle/skills"), "review");
        skill(&home, "review");
        skill(&home, "deploy");
        let agent = repo.join(".bottle/agents/a.toml");
        let found = find_all(
            &agent,
            AgentSource::Repo,
            &["review".into(), "deploy".into()],
            Some(&home),
        )
        .unwrap();
        assert_eq!(found[0].origin, SkillOrigin::Repo);
        assert_eq!(found[0].dir, repo.join(".bottle/skills/review"));
        assert_eq!(found[0].confine.as_deref(), Some(repo.as_path()));
        assert_eq!(found[1].origin, SkillOrigin::Home);
        assert_eq!(found[1].confine, None);
        // a home agent never looks in a repository
        let home_agent = root.join("home/agents/a.toml");
        let e = find_all(
            &home_agent,
            AgentSource::Home,
            &["nope".into()],
            Some(&home),
        )
        .unwrap_err();
        assert!(e.0.contains("skill `nope` not found"), "{e:?}");
        assert!(e.0.contains(home.join("nope").as_str()), "{e:?}");
        assert!(!e.0.contains(".bottle/skills"), "{e:?}");
    }

    #[test]
    fn a_missing_repo_skill_says_both_places() {
        let (_t, root) = tmp();
        let agent = root.join("repo/.bottle/agents/a.toml");
        let home = root.join("home/skills");
        let (msg, fix) =
            find_all(&agent, AgentSource::Repo, &["gone".into()], Some(&home)).unwrap_err();
        assert!(
            msg.contains(&format!(
                "looked in {} and {}",
                root.join("repo/.bottle/skills/gone"),
                home.join("gone")
            )),
            "{msg}"
        );
        assert!(fix.contains("SKILL.md"), "{fix}");
    }

    #[test]
    fn a_repo_skill_symlinked_out_of_the_repo_is_refused() {
        let (_t, root) = tmp();
        let outside = skill(&root.join("elsewhere"), "evil");
        let skills = root.join("repo/.bottle/skills");
        fs::create_dir_all(&skills).unwrap();
        std::os::unix::fs::symlink(&outside, skills.join("evil")).unwrap();
        let agent = root.join("repo/.bottle/agents/a.toml");
        let (msg, _) = find_all(&agent, AgentSource::Repo, &["evil".into()], None).unwrap_err();
        assert!(msg.contains("outside the repository"), "{msg}");
    }

    #[test]
    fn no_skill_md_and_bad_names_are_errors() {
        let (_t, root) = tmp();
        let home = root.join("skills");
        fs::create_dir_all(home.join("empty")).unwrap();
        let agent = root.join("agents/a.toml");
        let (msg, _) =
            find_all(&agent, AgentSource::Home, &["empty".into()], Some(&home)).unwrap_err();
        assert!(msg.contains("has no SKILL.md"), "{msg}");
        let (msg, _) =
            find_all(&agent, AgentSource::Home, &["../x".into()], Some(&home)).unwrap_err();
        assert!(msg.contains("not a valid skill name"), "{msg}");
    }

    fn plan_with(s: SkillPlan) -> BottlePlan {
        use crate::manifest::{agent_from_text, bottle_from_text};
        use crate::plan::{resolve, NoPrompt, ResolveOptions};
        let bottle = bottle_from_text("dev", "mem/dev.toml".into(), "").unwrap();
        let agent = agent_from_text(
            "mem/demo.toml".into(),
            "bottle = \"dev\"\n",
            AgentSource::Home,
        )
        .unwrap();
        let host = std::collections::BTreeMap::<String, String>::new();
        let mut plan = resolve(
            &agent,
            &bottle,
            &ResolveOptions::default(),
            &host,
            &NoPrompt,
        )
        .unwrap();
        plan.provider.skills = vec![s];
        plan
    }

    #[test]
    fn files_land_under_each_target_with_modes() {
        let (_t, root) = tmp();
        let dir = skill(&root, "review");
        let plan = plan_with(SkillPlan {
            name: "review".into(),
            source: dir.clone(),
            origin: SkillOrigin::Home,
            targets: targets(&ImageSource::Template(Template::Shell), "review"),
            confine: None,
        });
        let files = agent_files(&plan).unwrap();
        let got: Vec<(String, u32)> = files.iter().map(|f| (f.guest.clone(), f.mode)).collect();
        assert_eq!(
            got,
            vec![
                ("~/.claude/skills/review/SKILL.md".into(), 0o644),
                ("~/.claude/skills/review/scripts/run.sh".into(), 0o755),
                ("~/.agents/skills/review/SKILL.md".into(), 0o644),
                ("~/.agents/skills/review/scripts/run.sh".into(), 0o755),
            ]
        );
        assert_eq!(files[0].host, dir.join("SKILL.md"));
    }

    #[test]
    fn a_symlink_inside_a_repo_skill_may_not_leave_the_repo() {
        let (_t, root) = tmp();
        let repo = root.join("repo");
        let dir = skill(&repo.join(".bottle/skills"), "review");
        fs::write(root.join("secret.txt"), "host file").unwrap();
        std::os::unix::fs::symlink(root.join("secret.txt"), dir.join("leak.txt")).unwrap();
        let mk = |confine: Option<Utf8PathBuf>, origin| {
            plan_with(SkillPlan {
                name: "review".into(),
                source: dir.clone(),
                origin,
                targets: targets(&ImageSource::Template(Template::Claude), "review"),
                confine,
            })
        };
        let e = agent_files(&mk(Some(repo.clone()), SkillOrigin::Repo)).unwrap_err();
        assert!(e.to_string().contains("outside the repository"), "{e}");
        // the operator's own skills may link anywhere
        let files = agent_files(&mk(None, SkillOrigin::Home)).unwrap();
        assert!(files
            .iter()
            .any(|f| f.guest == "~/.claude/skills/review/leak.txt"));
    }
}
