//! The one client of the control socket: a request out, the reply in, with a time limit on every
//! step. Used by the CLI, the libvirt hook and the benchmark.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::de::DeserializeOwned;

use crate::{
    proto::{ErrorBody, Reply, Request},
    refusal::Refusal,
};

/// How long the CLI waits for the daemon unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach the mat daemon at {socket} (is `mat daemon` running? --socket or MAT_SOCKET): {source}"
    )]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the mat daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the mat daemon closed the connection without a reply")]
    Closed,
    #[error("unexpected reply from the mat daemon ({reply:?}): {error}")]
    Reply {
        reply: String,
        error: serde_json::Error,
    },
    #[error("the mat daemon refused: {0}")]
    Refused(Refusal),
}

/// A connection to the daemon.
pub struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    /// Connects to `socket`; every later read and write waits at most `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Self, Error> {
        let stream = UnixStream::connect(socket).map_err(|source| Error::Connect {
            socket: socket.to_owned(),
            source,
        })?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    /// Like [`Client::connect`], waiting up to `restart` for a daemon that is restarting (an
    /// upgrade, systemd's restart on failure): its socket missing or refusing connections.
    pub fn connect_waiting(
        socket: &Path,
        timeout: Duration,
        restart: Duration,
    ) -> Result<Self, Error> {
        let until = Instant::now() + restart;
        loop {
            match Self::connect(socket, timeout) {
                Err(Error::Connect { source, .. })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < until =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                done => return done,
            }
        }
    }

    /// Sends one request and returns the daemon's reply as it came.
    pub fn reply(&mut self, req: &Request) -> Result<Reply, Error> {
        let mut line = serde_json::to_string(req).expect("requests serialize");
        line.push('\n');
        // The daemon may answer and close before reading (a peer it refuses): read the reply
        // even when sending failed.
        let sent = self.stream.write_all(line.as_bytes());
        let mut reply = String::new();
        let read = self.reader.read_line(&mut reply);
        if reply.is_empty() {
            sent?;
            read?;
            return Err(Error::Closed);
        }
        serde_json::from_str(&reply).map_err(|error| Error::Reply { reply, error })
    }

    /// Sends a streaming request (`monitor`): after the daemon's first reply (ok, or the
    /// refusal), the connection carries one JSON line per record, with no time limit, until
    /// either side closes it.
    pub fn stream(mut self, req: &Request) -> Result<BufReader<UnixStream>, Error> {
        if let Reply::Error(ErrorBody { code, message }) = self.reply(req)? {
            return Err(Error::Refused(Refusal::new(code, message)));
        }
        self.stream.set_read_timeout(None)?;
        Ok(self.reader)
    }

    /// Sends one request and returns its typed result, or the refusal.
    pub fn call<T: DeserializeOwned>(&mut self, req: &Request) -> Result<T, Error> {
        match self.reply(req)? {
            Reply::Ok(v) => serde_json::from_value(v).map_err(|error| Error::Reply {
                reply: String::new(),
                error,
            }),
            Reply::Error(ErrorBody { code, message }) => {
                Err(Error::Refused(Refusal::new(code, message)))
            }
        }
    }
}

/// One request on a connection of its own.
pub fn call<T: DeserializeOwned>(
    socket: &Path,
    timeout: Duration,
    req: &Request,
) -> Result<T, Error> {
    Client::connect(socket, timeout)?.call(req)
}
