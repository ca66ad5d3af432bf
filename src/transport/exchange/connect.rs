//! The client side: connecting to a server, and reconnecting after a
//! failed attempt or a lost link (with jitter).

use super::*;

impl Exchanges {
    // ----- connecting -----

    pub(super) fn connect_attempt(&mut self, id: u64) {
        let token = self.token();
        let Some(exch) = self.exchanges.get_mut(&id) else {
            return;
        };
        let Role::Client {
            addrs,
            next_addr,
            conn,
            attempts,
            tls,
            ..
        } = &mut exch.role
        else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let addr = addrs[*next_addr % addrs.len()];
        *next_addr += 1;
        *attempts += 1;
        if *attempts > 1 {
            Counters::bump(&self.link.counters.reconnects);
        }
        let stream = Stream::connect(addr, tls.as_ref()).and_then(|mut s| {
            self.poll.register(
                &mut s,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(s)
        });
        match stream {
            Ok(stream) => {
                *conn = Some(token);
                exch.conns.push(token);
                self.add_conn(token, id, stream, addr, ConnState::Connecting);
                log::debug!("netsvc: connecting to {addr}");
            }
            Err(e) => {
                log::debug!("netsvc: connect to {addr} failed at once: {e}");
                let detail = format!("connect failed: {e}");
                let why = Some((connect_why(&e), detail.as_str()));
                self.announce_connection(id, ConnectionState::Inactive, None, addr, why, None);
                self.schedule_reconnect(id);
            }
        }
    }

    pub(super) fn schedule_reconnect(&mut self, id: u64) {
        let Some(exch) = self.exchanges.get(&id) else {
            return;
        };
        if let Role::Client {
            retry: Some(delay), ..
        } = exch.role
        {
            let delay = self.jitter(delay);
            self.timers
                .start(Instant::now() + delay, NetTimer::Reconnect(id));
        }
    }

    pub(super) fn reconnect_due(&mut self, id: u64) {
        let idle = matches!(
            self.exchanges.get(&id).map(|e| &e.role),
            Some(Role::Client {
                conn: None,
                retry: Some(_),
                ..
            })
        );
        if idle {
            self.connect_attempt(id);
        }
    }
}
