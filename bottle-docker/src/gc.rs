//! Images `bottle gc --images` may remove: bottle's own tags
//! (`bottle-agent-*`, `bottle-ws`, `bottle-sidecar`, see [`crate::images`])
//! that no container uses. Images are shared by every home on the engine
//! and are rebuilt (content-addressed) when a bottle starts or resumes, so
//! removing one costs a rebuild, never a bottle.

use std::collections::BTreeSet;

use bottle_core::command::{CommandRunner, CommandSpec};
use bottle_core::{Error, Result};

/// One bottle image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `repository:tag`.
    pub tag: String,
    /// Image id (`sha256:…`).
    pub id: String,
    /// Size as docker prints it (`234MB`).
    pub size: String,
}

/// Whether a repository name is one of bottle's image repositories.
pub fn is_bottle_repo(repo: &str) -> bool {
    repo == "bottle-sidecar" || repo == "bottle-ws" || repo.starts_with("bottle-agent-")
}

/// Bottle images that no container (running or not, of any bottle or
/// none) was created from.
pub fn unused_images(runner: &dyn CommandRunner) -> Result<Vec<Image>> {
    let o = runner.output(&CommandSpec::new("docker").args([
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}",
    ]))?;
    let mut images = Vec::new();
    for line in o.stdout.lines() {
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        if let [repo, tag, id, size] = f[..] {
            if is_bottle_repo(repo) && tag != "<none>" {
                images.push(Image {
                    tag: format!("{repo}:{tag}"),
                    id: id.to_owned(),
                    size: size.to_owned(),
                });
            }
        }
    }
    if images.is_empty() {
        return Ok(images);
    }
    let used = used_image_ids(runner)?;
    images.retain(|i| !used.contains(&i.id));
    Ok(images)
}

fn used_image_ids(runner: &dyn CommandRunner) -> Result<BTreeSet<String>> {
    let ids = runner.output(&CommandSpec::new("docker").args(["ps", "--all", "--quiet"]))?;
    let ids: Vec<&str> = ids.stdout.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    // allow_failure: a container removed meanwhile fails its inspect only
    let o = runner.output(
        &CommandSpec::new("docker")
            .args(["inspect", "--format", "{{.Image}}"])
            .args(ids.iter().copied())
            .allow_failure(),
    )?;
    Ok(o.stdout.lines().map(|l| l.trim().to_owned()).collect())
}

/// Remove `images` by tag (never forced: docker keeps an image a container
/// started using meanwhile). Returns the tags removed; failures other than
/// "in use" are collected as errors.
pub fn remove_images(
    images: &[Image],
    runner: &dyn CommandRunner,
) -> (Vec<String>, Vec<(String, Error)>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for i in images {
        let spec = CommandSpec::new("docker")
            .args(["image", "rm", &i.tag])
            .allow_failure();
        match runner.output(&spec) {
            Ok(o) if o.success() => removed.push(i.tag.clone()),
            Ok(o) if o.stderr.contains("is being used") || o.stderr.contains("conflict") => {}
            Ok(o) if o.stderr.contains("No such image") => {}
            Ok(o) => errors.push((
                format!("remove image {}", i.tag),
                bottle_core::command::failure(&spec, &o),
            )),
            Err(e) => errors.push((format!("remove image {}", i.tag), e)),
        }
    }
    (removed, errors)
}

/// Bytes the engine's images take (`docker system df`), if it says.
pub fn images_bytes(runner: &dyn CommandRunner) -> Option<u64> {
    let o = runner
        .output(
            &CommandSpec::new("docker")
                .args(["system", "df", "--format", "{{.Type}}\t{{.Size}}"])
                .allow_failure(),
        )
        .ok()?;
    o.stdout.lines().find_map(|l| {
        let (kind, size) = l.split_once('\t')?;
        (kind.trim() == "Images")
            .then(|| parse_size(size))
            .flatten()
    })
}

/// A size as docker prints it (`1.23GB`, `234MB`, `0B`; decimal units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.trim().parse().ok()?;
    let mult = match unit.trim() {
        "B" => 1e0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return None,
    };
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_core::RecordingRunner;

    #[test]
    fn only_bottle_images_no_container_uses() {
        let r = RecordingRunner::new();
        r.reply(
            "docker images",
            0,
            "bottle-sidecar\taaa\tsha256:1\t470MB\n\
             bottle-sidecar\tbbb\tsha256:2\t470MB\n\
             bottle-ws\tccc\tsha256:3\t240MB\n\
             bottle-agent-shell\tddd\tsha256:4\t234MB\n\
             bottle-test-sshd\tbookworm\tsha256:5\t240MB\n\
             debian\tbookworm-slim\tsha256:6\t74MB\n\
             <none>\t<none>\tsha256:7\t470MB\n",
        );
        r.reply("docker ps", 0, "c1\nc2\n");
        r.reply("docker inspect", 0, "sha256:2\nsha256:6\n");
        let tags: Vec<String> = unused_images(&r)
            .unwrap()
            .into_iter()
            .map(|i| i.tag)
            .collect();
        assert_eq!(
            tags,
            [
                "bottle-sidecar:aaa",
                "bottle-ws:ccc",
                "bottle-agent-shell:ddd"
            ]
        );
    }

    #[test]
    fn removal_is_never_forced_and_in_use_is_kept() {
        let r = RecordingRunner::new();
        r.reply("docker image rm bottle-ws:b", 1, "");
        let img = |t: &str| Image {
            tag: t.into(),
            id: String::new(),
            size: String::new(),
        };
        let (removed, errors) = remove_images(&[img("bottle-ws:a"), img("bottle-ws:b")], &r);
        assert_eq!(removed, ["bottle-ws:a"]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(r
            .calls()
            .iter()
            .all(|c| !c.args.contains(&"--force".to_owned())));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_size("234MB"), Some(234_000_000));
        assert_eq!(parse_size("0B"), Some(0));
        assert_eq!(parse_size("12.3kB"), Some(12_300));
        assert_eq!(parse_size("lots"), None);
    }
}
