//! Socket I/O of a link: reads that clear tokio's readiness on a short read,
//! writes that give up only for a cut, FIN and RST helpers, and the
//! per-thread pool of read buffers. Knows sockets and the connection's
//! mailbox, nothing of frames.

use std::io;

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::proxy::conn::ConnShared;
use crate::toxics::StreamDir;

/// Bytes asked of the kernel per read.
pub(super) const READ_CHUNK: usize = 32 * 1024;

pub(super) mod pool {
    //! A per-thread pool of read buffers, so idle connections hold none.
    use std::cell::RefCell;

    use bytes::BytesMut;

    const KEEP: usize = 64;
    const MAX_KEPT_CAPACITY: usize = 256 * 1024;

    thread_local! {
        static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// Takes a buffer with at least `min` spare bytes.
    pub fn take(min: usize) -> BytesMut {
        let mut buf = POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| BytesMut::with_capacity(min));
        buf.reserve(min);
        buf
    }

    /// Returns an empty buffer to the pool.
    pub fn give(mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() == 0 || buf.capacity() > MAX_KEPT_CAPACITY {
            return;
        }
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < KEEP {
                pool.push(buf);
            }
        });
    }
}

/// Whether a read error means the peer reset the connection.
pub(super) fn is_reset(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Sends FIN on `stream` (errors ignored: the socket may be gone already).
pub(super) fn shutdown_write(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// Reads what is available into `buf` (taking a pooled buffer if needed).
pub(super) async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            if buf.capacity() == 0 {
                *buf = pool::take(READ_CHUNK);
            } else {
                buf.reserve(READ_CHUNK);
            }
        }
        // A read that leaves spare room in the buffer drained the socket
        // (edge-triggered epoll): report WouldBlock to `try_io` so tokio
        // clears the readiness now, instead of paying one more read that
        // fails with EAGAIN at the end of every batch (what tokio's own
        // `poll_read` does).
        let spare = buf.capacity() - buf.len();
        let mut got = 0;
        let result = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = n;
            if n > 0 && n < spare {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match result {
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                if got > 0 {
                    return Ok(got);
                }
            }
            Err(err) => return Err(err),
        }
    }
}

/// Writes all of `data`; gives up only when the connection is being cut.
/// Other commands stay in the mailbox until the write is done.
pub(super) async fn write_all(
    stream: &TcpStream,
    mut data: &[u8],
    conn: &ConnShared,
    link: StreamDir,
) -> io::Result<()> {
    let mut listening = true;
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => {
                data = &data[n..];
                continue;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        tokio::select! {
            ready = stream.writable() => ready?,
            _ = conn.wait(link), if listening => listening = false,
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)), if !listening => {}
        }
        if conn.is_cut_pending(link) {
            return Err(io::Error::other("connection cut"));
        }
    }
    Ok(())
}
