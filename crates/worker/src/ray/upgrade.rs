//! A tunnelled request that upgrades its connection (a WebSocket: Ray's CLI tails job logs
//! over one). HTTP clients hide the upgraded connection, so this speaks HTTP/1.1 itself on a
//! loopback TCP connection to the dashboard: it writes the request head, reads the answer's
//! head, and on `101 Switching Protocols` copies raw bytes both ways until either side ends.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bytes::Bytes;
use herd_proto::worker::{TunnelOpen, WorkerMessage, TUNNEL_CHUNK_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::tunnel::HOP_BY_HOP;

/// The answer's head may be at most this long.
const ANSWER_HEAD_BYTES_MAX: usize = 16 * 1024;
const ANSWER_HEADERS_MAX: usize = 64;
/// A refused upgrade's body (an error page) is read whole, up to this size and time.
const REFUSAL_BYTES_MAX: usize = 1 << 20;
const REFUSAL_READ_MAX: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn forward(
    events: &mpsc::Sender<WorkerMessage>,
    open: TunnelOpen,
    port: u16,
    mut upstream: mpsc::Receiver<Bytes>,
) -> Result<(), String> {
    let stream = open.stream;
    let head = request_head(&open, port)?;
    let mut connection =
        TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("cannot reach the dashboard: {e}"))?;
    connection.write_all(head.as_bytes()).await.map_err(|e| format!("cannot write to the dashboard: {e}"))?;
    let (status, headers, rest) = read_answer_head(&mut connection).await?;
    let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
    let send = |message| async { events.send(message).await.map_err(|e| e.to_string()) };
    send(WorkerMessage::TunnelResponse { stream, status, headers }).await?;
    let data = |bytes: &[u8]| {
        bytes
            .chunks(TUNNEL_CHUNK_BYTES)
            .map(|piece| WorkerMessage::TunnelData { stream, data: BASE64.encode(piece) })
            .collect::<Vec<_>>()
    };
    for message in data(&rest) {
        send(message).await?;
    }
    let (mut reader, mut writer) = connection.into_split();
    if status != 101 {
        // Refused: the rest is an ordinary answer's body (the connection may stay open after
        // it: read what Content-Length says, else to the end).
        let mut body = vec![0u8; length.unwrap_or(0).saturating_sub(rest.len()).min(REFUSAL_BYTES_MAX)];
        let read = async {
            match length {
                Some(_) => reader.read_exact(&mut body).await.map(|_| ()),
                None => reader.read_to_end(&mut body).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(REFUSAL_READ_MAX, read).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("the dashboard's answer broke off: {error}")),
            Err(_) => return Err("the dashboard's answer did not end".into()),
        }
        for message in data(&body) {
            send(message).await?;
        }
        return Ok(());
    }
    let mut buffer = vec![0u8; TUNNEL_CHUNK_BYTES];
    let mut upstream_open = true;
    loop {
        tokio::select! {
            chunk = upstream.recv(), if upstream_open => match chunk {
                Some(chunk) => writer.write_all(&chunk).await.map_err(|e| format!("the dashboard went away: {e}"))?,
                // The customer closed its side.
                None => {
                    upstream_open = false;
                    let _ = writer.shutdown().await;
                }
            },
            read = reader.read(&mut buffer) => match read {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    for message in data(&buffer[..n]) {
                        send(message).await?;
                    }
                }
                Err(error) => return Err(format!("the dashboard's connection broke: {error}")),
            },
        }
    }
}

/// The request's head as the dashboard gets it: the customer's end-to-end headers (the
/// coordinator chose them), this hop's own `Host`, `Connection` and `Upgrade`.
fn request_head(open: &TunnelOpen, port: u16) -> Result<String, String> {
    let token = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic());
    if !token(&open.method) || !open.path.starts_with('/') || !token(&open.path) {
        return Err("a malformed request line".into());
    }
    let upgrade = open.upgrade.as_deref().unwrap_or_default();
    if upgrade != "websocket" {
        return Err(format!("cannot upgrade to {upgrade:?}: only websocket is relayed"));
    }
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n",
        open.method, open.path
    );
    for (name, value) in &open.headers {
        let valid =
            token(name) && !name.contains(':') && value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
        if !valid {
            return Err(format!("a malformed header {name:?}"));
        }
        if !HOP_BY_HOP.contains(&name.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    Ok(head)
}

/// Reads up to the end of the answer's head: its status, its headers (this hop's own dropped,
/// except the two a `101` must carry), and whatever bytes came after it.
async fn read_answer_head(connection: &mut TcpStream) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > ANSWER_HEAD_BYTES_MAX {
            return Err("the dashboard's answer head is too long".into());
        }
        let n = connection.read(&mut chunk).await.map_err(|e| format!("the dashboard's answer broke off: {e}"))?;
        if n == 0 {
            return Err("the dashboard closed the connection without answering".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let rest = buffer[end + 4..].to_vec();
    let head = std::str::from_utf8(&buffer[..end]).map_err(|_| "the dashboard's answer head is not text")?;
    parse_answer_head(head).map(|(status, headers)| (status, headers, rest))
}

fn parse_answer_head(head: &str) -> Result<(u16, Vec<(String, String)>), String> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines.take(ANSWER_HEADERS_MAX) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim().to_ascii_lowercase();
        let kept =
            !HOP_BY_HOP.contains(&name.as_str()) || (status == 101 && (name == "upgrade" || name == "connection"));
        if kept {
            headers.push((name, value.trim().to_owned()));
        }
    }
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use herd_core::ClusterId;

    use super::*;

    fn open(headers: &[(&str, &str)]) -> TunnelOpen {
        TunnelOpen {
            stream: 1,
            cluster_id: ClusterId::from_entropy([1; 8]),
            method: "GET".into(),
            path: "/api/jobs/raysubmit_1/logs/tail".into(),
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            upgrade: Some("websocket".into()),
        }
    }

    #[test]
    fn the_request_head_carries_the_handshake_and_nothing_injected() {
        let head = request_head(&open(&[("sec-websocket-key", "abc=="), ("host", "evil")]), 4000).unwrap();
        assert!(head.starts_with("GET /api/jobs/raysubmit_1/logs/tail HTTP/1.1\r\nHost: 127.0.0.1:4000\r\n"), "{head}");
        assert!(head.contains("Upgrade: websocket\r\n") && head.contains("sec-websocket-key: abc==\r\n"), "{head}");
        assert!(!head.contains("evil"), "this hop's Host only: {head}");
        assert!(head.ends_with("\r\n\r\n"));
        assert!(request_head(&open(&[("x", "a\r\nInjected: 1")]), 4000).is_err());
        let mut other = open(&[]);
        other.upgrade = Some("h2c".into());
        assert!(request_head(&other, 4000).unwrap_err().contains("only websocket"));
    }

    #[test]
    fn a_switching_answer_keeps_its_upgrade_headers_and_others_lose_them() {
        let (status, headers) = parse_answer_head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x=",
        )
        .unwrap();
        assert_eq!(status, 101);
        assert_eq!(headers.len(), 3, "{headers:?}");
        let (status, headers) =
            parse_answer_head("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Type: text/plain").unwrap();
        assert_eq!((status, headers), (404, vec![("content-type".to_owned(), "text/plain".to_owned())]));
        assert!(parse_answer_head("SSH-2.0-OpenSSH").is_err());
    }
}
