//! The plan's unit tests (snapshots in `snapshots/`).

use super::resolve::template_command;
use crate::manifest::Template;

/// The real entry command of each template (what `docker run` gets),
/// with and without a prompt and permission prompts.
#[test]
fn template_entry_commands() {
    let mut out = String::new();
    for t in [Template::Claude, Template::Codex, Template::Shell] {
        for (prompt, prompts_on) in [(true, false), (false, false), (true, true)] {
            out.push_str(&format!(
                "{} prompt={prompt} permission_prompts={prompts_on}\n  {:?}\n",
                t.as_str(),
                template_command(t, prompt, prompts_on)
            ));
        }
    }
    insta::assert_snapshot!(out);
}
