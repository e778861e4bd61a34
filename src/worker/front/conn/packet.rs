//! A uwsgi connection: the packet as far as it has come (the connection
//! is parked until it is whole, with the head deadline of the accept),
//! then one exchange and a close, as uWSGI and nginx's `uwsgi_pass` do.

use std::time::Instant;

use super::super::body::{BodyFailure, Framing as BodyFraming, RequestBody};
use super::super::outcome::Outcome;
use super::super::request::Fields;
use super::super::response::{Ctx, Response, Written, write_response};
use super::super::stream::Peer;
use super::super::uwsgi;
use super::super::wire::Wire;
use super::super::{Protocol, Request, Version};
use super::{Conn, FirstLine, Phase, Scratch, Site, Step, call};

/// One uwsgi request, as far as the connection's input goes.
pub(super) fn serve_uwsgi(conn: &mut Conn<'_>, scratch: &mut Scratch, site: &Site<'_>) -> Step {
    let config = site.config;
    let Phase::Head { idle_until, head_by } = conn.phase else { return Step::Close };
    let deadline = head_by.unwrap_or(idle_until);
    let block_len = loop {
        match packet_len(conn.wire.buffered(), config.buffer_size) {
            Err(e) => {
                tracing::warn!("{e}; closing");
                return Step::Linger;
            }
            Ok(Some(n)) if conn.wire.buffered().len() >= uwsgi::HEADER_LEN + n => break n,
            Ok(_) => {}
        }
        match conn.wire.fill_now() {
            Ok(Some(_)) => {}
            Ok(None) if Instant::now() < deadline => return Step::Park,
            Ok(None) | Err(_) => return Step::Close,
        }
    };
    let packet = conn.wire.buffered();
    scratch.head.clear();
    scratch.head.extend_from_slice(&packet[uwsgi::HEADER_LEN..uwsgi::HEADER_LEN + block_len]);
    conn.wire.consume(uwsgi::HEADER_LEN + block_len);
    if let Err(e) = uwsgi::parse_vars(&scratch.head, config.max_headers + uwsgi::EXTRA_VARS, &mut scratch.fields) {
        tracing::warn!("{e}; closing");
        return Step::Linger;
    }
    let mut headers = Vec::new();
    let defaults =
        uwsgi::Defaults { server_name: site.server_name.as_bytes(), server_port: site.server_port.as_bytes() };
    let arrived = Instant::now();
    let lingers = match uwsgi::request(&scratch.head, &scratch.fields, &mut headers, &defaults) {
        Ok(mut req) => {
            req.conn_fd = conn.wire.raw_fd();
            req.conn_tcp = conn.wire.is_tcp();
            uwsgi_exchange(&mut conn.wire, site, &req, arrived)
        }
        Err(e) => {
            // What the vars say of the request, for its log line.
            let vars = Fields::new(&scratch.head, &scratch.fields);
            let var = |name: &[u8]| vars.get(name).filter(|v| !v.is_empty());
            let mut line = var(b"REQUEST_METHOD").unwrap_or(b"-").to_vec();
            line.push(b' ');
            line.extend_from_slice(var(b"REQUEST_URI").unwrap_or(b"-"));
            let text =
                |v: Option<&[u8]>, or: &str| v.map_or_else(|| or.to_owned(), |v| String::from_utf8_lossy(v).into());
            let peer = Peer {
                addr: text(var(b"REMOTE_ADDR"), &conn.peer.addr),
                port: text(var(b"REMOTE_PORT"), &conn.peer.port),
            };
            let line = FirstLine::of(&line);
            let written = uwsgi_refusal(&mut conn.wire, e);
            line.report_as(site.handler, &peer, Protocol::Uwsgi, &written);
            true
        }
    };
    if lingers { Step::Linger } else { Step::Close }
}

/// The vars block's length once the packet header is in: Ok(None) before.
fn packet_len(buf: &[u8], buffer_size: usize) -> Result<Option<usize>, uwsgi::PacketError> {
    let Some(b) = buf.get(..uwsgi::HEADER_LEN) else { return Ok(None) };
    let h = uwsgi::PacketHeader::parse([b[0], b[1], b[2], b[3]]);
    uwsgi::check_header(h, buffer_size.min(usize::from(u16::MAX))).map(Some)
}

fn uwsgi_refusal(wire: &mut Wire, e: uwsgi::VarsError) -> Written {
    let why = match e {
        uwsgi::VarsError::NoMethod => {
            tracing::warn!("uwsgi request without REQUEST_METHOD: does the nginx location include uwsgi_params?");
            "no REQUEST_METHOD"
        }
        uwsgi::VarsError::BadLength => "invalid CONTENT_LENGTH",
    };
    let ctx = Ctx { protocol: Protocol::Uwsgi, version: Version::Http10, head: false, keep_alive: false };
    write_response(wire, Response::text(400, "Bad Request", why), &ctx)
}

fn uwsgi_exchange(wire: &mut Wire, site: &Site<'_>, req: &Request<'_>, arrived: Instant) -> bool {
    let config = site.config;
    let length = req.content_length.unwrap_or(0);
    let ctx = Ctx { protocol: Protocol::Uwsgi, version: req.version, head: req.method == b"HEAD", keep_alive: false };
    if config.limit_post.is_some_and(|limit| length > limit) {
        let written =
            write_response(wire, Response::text(413, "Content Too Large", "request body larger than limit-post"), &ctx);
        site.handler.done(req, &Outcome::new(&written, arrived));
        return true;
    }
    let mut body = RequestBody::new(wire, BodyFraming::Length(length), None, false, config.io_timeout);
    let (resp, _) = call(site.handler, req, &mut body);
    let unread = !body.is_finished();
    let gone = matches!(body.failure(), Some(BodyFailure::TimedOut | BodyFailure::Closed));
    let written = if gone { Written::default() } else { write_response(wire, resp, &ctx) };
    site.handler.done(req, &Outcome::new(&written, arrived));
    !gone && (unread || !wire.buffered().is_empty())
}
