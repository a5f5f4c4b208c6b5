//! UDP request/response latency for the network benchmark (bench/image.sh's vnet rows),
//! one static binary for both ends:
//!
//! - `yakvm-udprr echo PORT`: answers every datagram on UDP PORT with the same bytes
//!   (our Linux guest runs it, env/guest-net);
//! - `yakvm-udprr client ADDR:PORT COUNT`: sends COUNT 64-byte requests one at a time,
//!   each after the last answer (a lost one is sent again after 1 s; 10 losses in a row
//!   end the run), and prints `UDPRR COUNT TOTAL_US MEDIAN_US P99_US`.

use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn echo(port: u16) -> std::io::Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        sock.send_to(&buf[..n], from)?;
    }
}

fn client(addr: &str, count: u32) -> std::io::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut times = Vec::with_capacity(count as usize);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    for i in 0..count {
        let mut req = [0u8; 64];
        req[..4].copy_from_slice(&i.to_le_bytes());
        let mut losses = 0;
        loop {
            let t = Instant::now();
            sock.send(&req)?;
            // Answers to an earlier, lost-and-resent request are skipped.
            let got = loop {
                match sock.recv(&mut buf) {
                    Ok(n) if n == req.len() && buf[..4] == req[..4] => break true,
                    Ok(_) => continue,
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
                    Err(e) => return Err(e),
                }
            };
            if got {
                times.push(t.elapsed().as_micros() as u64);
                break;
            }
            losses += 1;
            if losses == 10 {
                return Err(std::io::Error::other(format!("request {i}: no answer 10 times")));
            }
        }
    }
    let total = start.elapsed().as_micros();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!("UDPRR {count} {total} {} {}", at(0.5), at(0.99));
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>()[1..] {
        ["echo", port] => match port.parse() {
            Ok(p) => echo(p),
            Err(_) => Err(std::io::Error::other(format!("'{port}' is not a port"))),
        },
        ["client", addr, count] => match count.parse() {
            Ok(n) if n > 0 => client(addr, n),
            _ => Err(std::io::Error::other(format!("'{count}' is not a count above 0"))),
        },
        _ => Err(std::io::Error::other("usage: yakvm-udprr echo PORT | client ADDR:PORT COUNT")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("yakvm-udprr: {e}");
            ExitCode::FAILURE
        }
    }
}
