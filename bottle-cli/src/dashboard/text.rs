//! Terminal output made fit for the logs pane.

/// The last `max` lines of `text`, without terminal control sequences (an
/// agent's output is a terminal's: colours, `\r`, title changes).
pub fn last_lines(text: &str, max: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max)..]
        .iter()
        .map(|l| printable(l))
        .collect()
}

/// `line` without ANSI escape sequences and control characters (a tab is
/// four spaces; after a `\r` only what was written last stays).
fn printable(line: &str) -> String {
    let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters, then one final byte in @..~
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' => out.push_str("    "),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_terminal_control_sequences() {
        assert_eq!(
            last_lines(
                "one\n\x1b[1;32mgreen\x1b[0m\tx\n\x1b]0;title\x07$ ls\r\nprogress 10%\rprogress 99%\n",
                3
            ),
            ["green    x", "$ ls", "progress 99%"]
        );
    }
}
