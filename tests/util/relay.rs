//! A TCP relay between one client and a server, as a party in the middle
//! would run it: for tests of what a relayed handshake yields.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;

/// Relays the first client that connects to the returned address to
/// `upstream`, both ways. Each chunk the client sends passes through `edit`
/// first, which may record or rewrite it. The thread ends when either side
/// closes (and closes the other).
pub fn relay(
    upstream: SocketAddr,
    mut edit: impl FnMut(&mut [u8]) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    let proxy = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
    let addr = proxy.local_addr().expect("the relay's address");
    let thread = std::thread::spawn(move || {
        let (mut down, _) = proxy.accept().expect("accept the client");
        let mut up = TcpStream::connect(upstream).expect("connect upstream");
        let mut down2 = down.try_clone().expect("clone");
        let mut up2 = up.try_clone().expect("clone");
        let back = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = up2.read(&mut buf) {
                if n == 0 || down2.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = down2.shutdown(Shutdown::Both);
        });
        let mut buf = [0u8; 4096];
        while let Ok(n) = down.read(&mut buf) {
            if n == 0 {
                break;
            }
            edit(&mut buf[..n]);
            if up.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = up.shutdown(Shutdown::Both);
        let _ = back.join();
    });
    (addr, thread)
}
