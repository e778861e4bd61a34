//! A private nginx (its own prefix and config in a temp dir, one process,
//! on 127.0.0.1 and a free port) with `uwsgi_pass` to the front's Unix
//! socket: the packets and the answer parsing are nginx's own.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use podmaster::worker::front::{Config, Protocol};

use crate::harness::*;
use crate::uwsgi::describe;

/// nginx's stock `uwsgi_params` (Debian's, with its `HTTP_HOST $host`).
const UWSGI_PARAMS: &str = "
    uwsgi_param QUERY_STRING $query_string;
    uwsgi_param REQUEST_METHOD $request_method;
    uwsgi_param CONTENT_TYPE $content_type;
    uwsgi_param CONTENT_LENGTH $content_length;
    uwsgi_param REQUEST_URI $request_uri;
    uwsgi_param PATH_INFO $document_uri;
    uwsgi_param DOCUMENT_ROOT $document_root;
    uwsgi_param SERVER_PROTOCOL $server_protocol;
    uwsgi_param REQUEST_SCHEME $scheme;
    uwsgi_param HTTPS $https if_not_empty;
    uwsgi_param REMOTE_ADDR $remote_addr;
    uwsgi_param REMOTE_PORT $remote_port;
    uwsgi_param SERVER_PORT $server_port;
    uwsgi_param SERVER_NAME $server_name;
    uwsgi_param HTTP_HOST $host;
";

/// The nginx child; killed (it is ours, by its pid) and reaped on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

fn start_nginx(dir: &Path, socket: &Path) -> Nginx {
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n    server_name test.local;\n    location / {{\n{UWSGI_PARAMS}\n\
         uwsgi_pass unix:{};\n    }}\n  }}\n}}\n",
        socket.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut nginx = Nginx { child, addr };
    let up = eventually(STEP, || {
        std::net::TcpStream::connect(addr).is_ok() || nginx.child.try_wait().ok().flatten().is_some()
    });
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    assert!(up && nginx.child.try_wait().ok().flatten().is_none(), "nginx did not start:\n{log}");
    nginx
}

#[test]
#[cfg_attr(not(have_nginx), ignore = "needs nginx on PATH: apt-get install nginx-light, then touch build.rs")]
fn behind_nginx_uwsgi_pass() {
    let srv = Server::unix(Protocol::Uwsgi, Config::default(), 4, describe);
    let sock = srv.path.clone().unwrap();
    let dir = temp_dir();
    let nginx = start_nginx(&dir, &sock);

    let resp = exchange(
        nginx.addr,
        b"GET /caf%C3%A9/x?q=%20&r HTTP/1.1\r\nHost: test.local\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    );
    let text = resp.text();
    assert_eq!(resp.status, 200, "{text}");
    for line in [
        "method=GET",
        "path=/caf\u{e9}/x",
        "query=q=%20&r",
        "uri=/caf%C3%A9/x?q=%20&r",
        "scheme=http",
        "protocol=HTTP/1.1",
        "host=test.local",
        "xff=1.2.3.4",
        "body=",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    assert!(text.lines().any(|l| l.starts_with("remote=127.0.0.1:")), "{text}");
    assert!(text.lines().any(|l| l == format!("server=test.local:{}", nginx.addr.port())), "{text}");

    // A body nginx received chunked reaches the front with its length.
    let mut s = connect(nginx.addr);
    s.write_all(
        b"POST /form HTTP/1.1\r\nHost: test.local\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    let resp = read_response(&mut BufReader::new(s), false).unwrap();
    let text = resp.text();
    assert!(text.lines().any(|l| l == "body=hello world") && text.contains("type=text/plain"), "{text}");

    // A streamed answer (close-delimited towards nginx) reaches the client whole.
    let resp = exchange(nginx.addr, b"GET /stream HTTP/1.1\r\nHost: test.local\r\n\r\n");
    assert_eq!((resp.status, resp.text().as_str()), (200, "part0;part1;part2;part3;"));

    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}
