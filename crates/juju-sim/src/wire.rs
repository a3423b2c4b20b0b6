//! Wire format between a hook-tool client and the unit's tool server.
//!
//! Owns: the request/response types and their framing (a 4-byte big-endian length, then
//! JSON). Byte payloads travel base64-encoded so any stdin/stdout survives.
//!
//! Invariants: one request, one response per round trip; a client may send a second request
//! on the same connection only after a [`Response::NeedStdin`] (the Juju client does the same:
//! stdin is forwarded only to tools that read it).
//!
//! Hazards: a frame larger than [`MAX_FRAME`] is refused, so a runaway client cannot make the
//! simulator allocate without bound.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Largest accepted frame (64 MiB: far above anything a charm sends through a hook tool).
pub const MAX_FRAME: u32 = 64 << 20;

/// Errors of the framing layer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("socket i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed base64 payload: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge(u32),
}

/// What a hook-tool client sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// `JUJU_CONTEXT_ID` as the client saw it.
    pub context_id: String,
    /// Working directory of the client (in the unit's filesystem view).
    pub cwd: String,
    /// Tool name first, then its arguments.
    pub args: Vec<String>,
    /// Whole stdin, base64; only present after the server asked for it.
    #[serde(default)]
    pub stdin_b64: Option<String>,
}

/// What the server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The tool needs stdin: resend the request with `stdin_b64` filled.
    NeedStdin,
    /// The tool ran (or failed); print these and exit with `code`.
    Done {
        stdout_b64: String,
        stderr_b64: String,
        code: i32,
    },
}

impl Request {
    /// Decoded stdin, if it was sent.
    pub fn stdin(&self) -> Result<Option<Vec<u8>>, WireError> {
        self.stdin_b64
            .as_deref()
            .map(|s| B64.decode(s).map_err(WireError::from))
            .transpose()
    }
}

impl Response {
    /// A finished answer from raw bytes.
    pub fn done(stdout: &[u8], stderr: &[u8], code: i32) -> Response {
        Response::Done {
            stdout_b64: B64.encode(stdout),
            stderr_b64: B64.encode(stderr),
            code,
        }
    }
}

/// Base64-encode bytes (for [`Request::stdin_b64`]).
pub fn encode(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Base64-decode a payload.
pub fn decode(s: &str) -> Result<Vec<u8>, WireError> {
    Ok(B64.decode(s)?)
}

/// Write one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), WireError> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len()).map_err(|_| WireError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Read one frame.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request {
            context_id: "c".into(),
            cwd: "/".into(),
            args: vec!["relation-get".into(), "-".into()],
            stdin_b64: Some(encode(b"\x00\xffdata")),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        let back: Request = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(back.args, req.args);
        assert_eq!(back.stdin().unwrap().unwrap(), b"\x00\xffdata");
    }

    #[test]
    fn oversized_frame_is_refused() {
        let mut buf = (MAX_FRAME + 1).to_be_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        let r: Result<Request, _> = read_frame(&mut buf.as_slice());
        assert!(matches!(r, Err(WireError::TooLarge(_))));
    }
}
