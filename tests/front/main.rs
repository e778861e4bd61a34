//! The WSGI worker's front (src/worker/front) over real sockets, with Rust
//! handlers: keep-alive, pipelining, 100 MB bodies each way in bounded
//! memory, 100-continue, HEAD, HTTP/1.0, panics, slowloris, the drain,
//! concurrency, keep-alive clients parked between requests (one thread
//! serves many), fd exhaustion, the uwsgi protocol over a Unix socket, and (with nginx
//! installed) a private nginx with `uwsgi_pass` in front of it. No sleeps
//! to hope something happened: every wait polls a condition against a
//! deadline.

mod harness;
mod http;
mod nginx;
mod parking;
mod uwsgi;
