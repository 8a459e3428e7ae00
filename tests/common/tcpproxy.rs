//! A TCP proxy on loopback that a test can cut: between an agent and the server (a network
//! partition) or between containerd's puller and the registry (a registry that is down or
//! flapping), without touching any interface, route or firewall of the machine.
//!
//! - [`Mode::Pass`]: bytes flow both ways;
//! - [`Mode::Blackhole`]: connections are accepted and held, and nothing flows either way on any
//!   connection, old or new (as a dropped route looks: no reset, no close, only silence);
//! - [`Mode::Refuse`]: every connection, old and new, is closed at once (a peer that is down).
//!
//! Threads only; each connection's two directions poll the mode every 50 ms.
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass = 0,
    Blackhole = 1,
    Refuse = 2,
}

pub struct TcpProxy {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl TcpProxy {
    /// A proxy on a free loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let (mode2, stop2) = (mode.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let (mode, stop) = (mode2.clone(), stop2.clone());
                        std::thread::spawn(move || serve(down, upstream, mode, stop));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        TcpProxy { addr, mode, stop }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn mode_of(m: &AtomicU8) -> Mode {
    match m.load(Ordering::SeqCst) {
        0 => Mode::Pass,
        1 => Mode::Blackhole,
        _ => Mode::Refuse,
    }
}

fn serve(down: TcpStream, upstream: SocketAddr, mode: Arc<AtomicU8>, stop: Arc<AtomicBool>) {
    // a connection made while cut: refused ones close at once, blackholed ones wait in silence
    loop {
        match mode_of(&mode) {
            Mode::Pass => break,
            Mode::Refuse => return,
            Mode::Blackhole => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        return;
    };
    let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
    let (m2, s2) = (mode.clone(), stop.clone());
    let t = std::thread::spawn(move || pump(d2, u2, m2, s2));
    pump(up, down, mode, stop);
    let _ = t.join();
}

/// Copies `from` to `to` while the mode lets it; ends both on a close, an error or Refuse.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: Arc<AtomicU8>, stop: Arc<AtomicBool>) {
    from.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match mode_of(&mode) {
            Mode::Refuse => break,
            Mode::Blackhole => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Mode::Pass => {}
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // bytes read just as the link was cut still go: they were on the wire
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
