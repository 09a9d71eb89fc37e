//! The PROXY protocol (HAProxy's, versions 1 and 2) on an entrypoint with `proxyProtocol`: a
//! connection may start with a header naming the client a load balancer relays. The header is
//! read off the socket before anything else (TLS, HTTP); from a trusted address
//! (`trustedIPs`, or `insecure`) the client it names replaces the peer for everything after
//! (`X-Forwarded-For`, `ipAllowList`, the access log), from any other it is read off and
//! ignored, as Traefik does. A connection without a header is served as it is; a malformed
//! header closes it.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{io::AsyncReadExt, net::TcpStream};

/// What starts a version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// What starts a version 1 header.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest version 1 line, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// How long to wait before looking again at a header that has only partly arrived: doubled
/// each time up to [`PARTIAL_WAIT_MAX`], so that a peer trickling bytes costs a few wake-ups.
const PARTIAL_WAIT: Duration = Duration::from_millis(1);
const PARTIAL_WAIT_MAX: Duration = Duration::from_millis(64);
/// The most a version 2 header may carry after its fixed part (addresses and TLVs); real ones
/// carry tens of bytes.
const V2_MAX: usize = 4096;

/// Reads a PROXY header off `stream` if it starts with one. `Ok(Some(client))` for a header
/// that names a TCP client; `Ok(None)` without a header, or for one that names none (v1
/// `UNKNOWN`, v2 `LOCAL`, a family other than TCP over IPv4 or IPv6). The caller bounds the
/// wait with its header timeout.
pub async fn read(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut first = [0u8; 12];
    let seen = peek_while_prefix(stream, &mut first, V2_SIGNATURE, V1_PREFIX).await?;
    if seen.starts_with(V2_SIGNATURE) {
        v2(stream).await
    } else if seen.starts_with(V1_PREFIX) {
        v1(stream).await
    } else {
        Ok(None)
    }
}

/// Peeks until the bytes seen can no longer start `a` or `b`, or hold one of them whole;
/// returns what was seen. A partial header is looked at again after a short wait rather than
/// in a busy loop (peek answers at once while any byte is there).
async fn peek_while_prefix<'b>(stream: &TcpStream, buf: &'b mut [u8; 12], a: &[u8], b: &[u8]) -> io::Result<&'b [u8]> {
    let mut wait = PARTIAL_WAIT;
    loop {
        let n = stream.peek(buf).await?;
        let seen = &buf[..n];
        let could_be = |p: &[u8]| seen.len() < p.len() && p.starts_with(seen);
        if n == 0 || !(could_be(a) || could_be(b)) {
            return Ok(&buf[..n]);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(PARTIAL_WAIT_MAX);
    }
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, `TCP6` likewise, or `PROXY UNKNOWN ...\r\n`.
async fn v1(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut buf = [0u8; V1_MAX];
    let mut wait = PARTIAL_WAIT;
    let len = loop {
        let n = stream.peek(&mut buf).await?;
        if let Some(end) = buf[..n].windows(2).position(|w| w == b"\r\n") {
            break end + 2;
        }
        if n == V1_MAX {
            return Err(bad("a version 1 header longer than 107 bytes"));
        }
        if n == 0 {
            return Err(bad("the connection closed inside a version 1 header"));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(PARTIAL_WAIT_MAX);
    };
    stream.read_exact(&mut buf[..len]).await?;
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..len - 2]).map_err(|_| bad("a header that is not text"))?;
    parse_v1(line)
}

fn parse_v1(line: &str) -> io::Result<Option<SocketAddr>> {
    let fields: Vec<&str> = line.split(' ').collect();
    match fields.as_slice() {
        ["UNKNOWN", ..] => Ok(None),
        [family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| bad("a source address that is not an IP"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(bad("a source address of the other family"));
            }
            let port = port(sport)?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(bad("a version 1 header that is not TCP4, TCP6 or UNKNOWN with four fields")),
    }
}

/// A decimal port without sign or leading zeros, as the specification writes them.
fn port(text: &str) -> io::Result<u16> {
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    text.parse().ok().filter(|_| valid).ok_or_else(|| bad("a port that is not 0 to 65535"))
}

/// The 16-byte fixed part, then as many bytes as it says: addresses, then TLVs (skipped).
async fn v2(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    if len > V2_MAX {
        return Err(bad("a version 2 header longer than 4 KiB"));
    }
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await?;
    parse_v2(head[12], head[13], &rest)
}

fn parse_v2(version_command: u8, family: u8, rest: &[u8]) -> io::Result<Option<SocketAddr>> {
    if version_command >> 4 != 2 {
        return Err(bad("a version 2 signature with another version"));
    }
    match version_command & 0x0f {
        0 => return Ok(None), // LOCAL: the balancer's own connection (a health check).
        1 => {}
        _ => return Err(bad("a version 2 command other than LOCAL or PROXY")),
    }
    match family {
        0x11 if rest.len() >= 12 => {
            let ip = Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3]);
            Ok(Some(SocketAddr::new(ip.into(), u16::from_be_bytes([rest[8], rest[9]]))))
        }
        0x21 if rest.len() >= 36 => {
            let octets: [u8; 16] = rest[..16].try_into().expect("16 bytes");
            Ok(Some(SocketAddr::new(Ipv6Addr::from(octets).into(), u16::from_be_bytes([rest[32], rest[33]]))))
        }
        0x11 | 0x21 => Err(bad("a version 2 header too short for its addresses")),
        // UNSPEC, UDP, unix sockets: no TCP client to name.
        _ => Ok(None),
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("PROXY protocol: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_lines_name_their_source() {
        assert_eq!(parse_v1("TCP4 10.0.0.7 10.0.0.1 40000 443").unwrap(), Some("10.0.0.7:40000".parse().unwrap()));
        assert_eq!(
            parse_v1("TCP6 2001:db8::7 2001:db8::1 40000 443").unwrap(),
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        assert_eq!(parse_v1("UNKNOWN").unwrap(), None);
        assert_eq!(parse_v1("UNKNOWN ffff::1 ffff::2 1 2").unwrap(), None);
        for bad in [
            "TCP4 10.0.0.7 10.0.0.1 40000",
            "TCP4 2001:db8::7 ::1 1 2",
            "TCP4 1.2.3.4 1.2.3.4 65536 1",
            "TCP4 1.2.3.4 1.2.3.4 080 1",
            "UDP4 1.2.3.4 1.2.3.4 1 2",
            "TCP4  1.2.3.4 1.2.3.4 1 2",
        ] {
            assert!(parse_v1(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn version_2_headers_name_their_source_or_none() {
        let v4 = [10, 0, 0, 7, 10, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb];
        assert_eq!(parse_v2(0x21, 0x11, &v4).unwrap(), Some("10.0.0.7:40000".parse().unwrap()));
        let mut v6 = vec![0u8; 36];
        v6[15] = 7;
        v6[32..34].copy_from_slice(&40000u16.to_be_bytes());
        assert_eq!(parse_v2(0x21, 0x21, &v6).unwrap(), Some("[::7]:40000".parse().unwrap()));
        assert_eq!(parse_v2(0x20, 0x11, &v4).unwrap(), None, "LOCAL");
        assert_eq!(parse_v2(0x21, 0x00, &[]).unwrap(), None, "UNSPEC");
        assert!(parse_v2(0x21, 0x11, &v4[..8]).is_err(), "short");
        assert!(parse_v2(0x11, 0x11, &v4).is_err(), "version 1 in a version 2 header");
        assert!(parse_v2(0x22, 0x11, &v4).is_err(), "unknown command");
    }
}
