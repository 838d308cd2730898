//! The git:// front door: the one pkt-line request a client sends before the
//! pack protocol starts, and the `ERR` packet the gate answers refusals with.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Which git service the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `git-upload-pack`: fetch / clone / ls-remote.
    UploadPack,
    /// `git-receive-pack`: push.
    ReceivePack,
}

impl Service {
    /// The `git` subcommand that serves it.
    pub fn git_subcommand(self) -> &'static str {
        match self {
            Service::UploadPack => "upload-pack",
            Service::ReceivePack => "receive-pack",
        }
    }
}

/// A parsed git:// request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Requested service.
    pub service: Service,
    /// Remote name taken from the path (`/origin.git` → `origin`), unvalidated.
    pub remote: String,
    /// `version=N` extra parameter, if any (passed on as `GIT_PROTOCOL`).
    pub protocol: Option<String>,
}

/// Why a request line was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Socket error / EOF.
    #[error("reading the request: {0}")]
    Io(#[from] std::io::Error),
    /// Not a well-formed request.
    #[error("{0}")]
    Bad(String),
}

/// Largest pkt-line (length prefix included).
const MAX_PKT: usize = 65520;

/// Read exactly one pkt-line (no read-ahead, so the rest of the stream can be
/// handed to git untouched). Returns the payload.
pub async fn read_pkt<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, RequestError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let text =
        std::str::from_utf8(&len).map_err(|_| RequestError::Bad("bad pkt-line length".into()))?;
    let n = usize::from_str_radix(text, 16)
        .map_err(|_| RequestError::Bad("bad pkt-line length".into()))?;
    if !(4..=MAX_PKT).contains(&n) {
        return Err(RequestError::Bad("bad pkt-line length".into()));
    }
    let mut buf = vec![0u8; n - 4];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Parse `git-upload-pack /origin.git\0host=bundle\0\0version=2\0`.
pub fn parse_request(payload: &[u8]) -> Result<Request, RequestError> {
    let bad = |m: &str| RequestError::Bad(m.to_owned());
    let text = std::str::from_utf8(payload).map_err(|_| bad("request is not UTF-8"))?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let (service, rest) = text
        .split_once(' ')
        .ok_or_else(|| bad("malformed request"))?;
    let service = match service {
        "git-upload-pack" => Service::UploadPack,
        "git-receive-pack" => Service::ReceivePack,
        other => {
            return Err(RequestError::Bad(format!(
                "service {:?} is not offered (only git-upload-pack and git-receive-pack)",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    let mut fields = rest.split('\0');
    let path = fields.next().unwrap_or("");
    let mut protocol = None;
    // After host=..., an empty field introduces extra parameters.
    for f in fields {
        if let Some(v) = f.strip_prefix("version=") {
            if v.chars().all(|c| c.is_ascii_digit()) && !v.is_empty() && v.len() < 3 {
                protocol = Some(format!("version={v}"));
            }
        }
    }
    let name = path.strip_prefix('/').unwrap_or(path);
    let name = name.strip_suffix('/').unwrap_or(name);
    let name = name.strip_suffix(".git").unwrap_or(name);
    Ok(Request {
        service,
        remote: name.chars().take(200).collect(),
        protocol,
    })
}

/// Encode one pkt-line.
pub fn pkt(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// An `ERR` packet: the client prints `fatal: remote error: <msg>`.
pub fn err_pkt(msg: &str) -> Vec<u8> {
    let msg: String = msg.chars().filter(|c| !c.is_control()).take(1000).collect();
    pkt(format!("ERR {msg}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v0_and_v2_requests() {
        let r = parse_request(b"git-upload-pack /origin.git\0host=bundle:9418\0").unwrap();
        assert_eq!(r.service, Service::UploadPack);
        assert_eq!(r.remote, "origin");
        assert_eq!(r.protocol, None);
        let r = parse_request(b"git-receive-pack /up\0host=x\0\0version=2\0").unwrap();
        assert_eq!((r.service, r.remote.as_str()), (Service::ReceivePack, "up"));
        assert_eq!(r.protocol.as_deref(), Some("version=2"));
        assert!(parse_request(b"git-upload-archive /origin.git\0").is_err());
        assert!(parse_request(b"nonsense").is_err());
    }

    #[tokio::test]
    async fn reads_one_pkt_without_read_ahead() {
        let mut data: Vec<u8> = pkt(b"git-upload-pack /a.git\0host=h\0");
        data.extend_from_slice(b"REST");
        let mut cur = std::io::Cursor::new(data);
        let p = read_pkt(&mut cur).await.unwrap();
        assert!(p.starts_with(b"git-upload-pack"));
        let mut rest = String::new();
        cur.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "REST");
        assert_eq!(err_pkt("no"), b"000bERR no\n");
    }
}
