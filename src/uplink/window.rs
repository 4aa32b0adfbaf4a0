//! The in-flight window: which spooled records have been handed to the MQTT client on the current
//! connection, which packet id each got, and which the cloud broker acknowledged. It turns the client's
//! events into "everything up to sequence N is acknowledged" for the spool, and after a reconnect hands the
//! unacknowledged records out again, counting those that had reached the wire as possible duplicates. Pure
//! bookkeeping: no IO, no clock, no MQTT types.
//!
//! rumqttc gives each QoS 1/2 publish the next packet id in a cycle of `client_inflight` ids, and reports
//! `Outgoing::Publish(pkid)` for each request in the order it was queued. The window keeps the span between
//! the oldest unacknowledged submission and the next one below that cycle, so an id is never reused while
//! its publish is unacknowledged (rumqttc would otherwise park it as a "collision" and emit extra events),
//! and rumqttc's own flow control never holds a request back.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::spool::Record;

/// What a submission stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Record(u64),
    /// The uplink's own availability message.
    Control,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unsent,
    Submitted,
    Acked,
}

#[derive(Debug)]
struct Entry {
    record: Record,
    state: State,
    /// It reached the wire on an earlier connection without an acknowledgement.
    on_wire: bool,
    sent_before: bool,
}

/// A rumqttc event the window could not place: the connection should be dropped and started over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("packet id {0} reported twice before its acknowledgement")]
    PacketIdReused(u16),
    #[error("a publish was reported that was never submitted")]
    UnexpectedSent,
}

/// Counters the window keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounters {
    /// First sends of records that were spooled before the current connection came up.
    pub replayed: u64,
    /// Records sent again after a reconnect that had reached the wire unacknowledged: each may arrive
    /// twice at the cloud broker (QoS 1), the only duplicates the uplink makes.
    pub resent: u64,
    /// Records handed to the client (first sends and resends).
    pub submitted: u64,
    /// Records acknowledged (or, at QoS 0, written).
    pub acked: u64,
}

/// The in-flight window. See the module documentation.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    /// The packet-id cycle rumqttc is asked for (its `inflight` option).
    client_inflight: u64,
    /// The cycle on the current connection: `client_inflight`, or less where an MQTT 5 server's
    /// receive maximum is less (rumqttc then cycles through that many ids).
    cycle: u64,
    entries: VecDeque<Entry>,
    next_index: u64,
    /// Submissions not yet acknowledged, by submission index.
    outstanding: BTreeMap<u64, Target>,
    awaiting_sent: VecDeque<(u64, Target, u8)>,
    by_pkid: HashMap<u16, (u64, Target)>,
    replay_until: u64,
    counters: WindowCounters,
    /// One record in flight at a time (and none beside the availability message): while a message
    /// is suspected of being refused, so that a disconnect names it.
    single_file: bool,
}

impl Window {
    /// A window holding at most `capacity` records, for a client whose packet-id cycle is
    /// `capacity + 2` (one id for the availability message, one spare).
    pub fn new(capacity: usize) -> Window {
        let capacity = capacity.max(1);
        Window {
            capacity,
            client_inflight: capacity as u64 + 2,
            cycle: capacity as u64 + 2,
            entries: VecDeque::new(),
            next_index: 0,
            outstanding: BTreeMap::new(),
            awaiting_sent: VecDeque::new(),
            by_pkid: HashMap::new(),
            replay_until: 0,
            counters: WindowCounters::default(),
            single_file: false,
        }
    }

    /// The `inflight` option to give rumqttc.
    pub fn client_inflight(&self) -> u16 {
        self.client_inflight.min(u16::MAX as u64) as u16
    }

    /// How many more records the window takes.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.entries.len())
    }

    /// Takes records read from the spool, in sequence order.
    pub fn push(&mut self, records: Vec<Record>) {
        for record in records {
            self.entries.push_back(Entry {
                record,
                state: State::Unsent,
                on_wire: false,
                sent_before: false,
            });
        }
    }

    /// Records held (read from the spool and not yet acknowledged in order).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Submissions on this connection not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Sequence number of the newest record held.
    pub fn newest_seq(&self) -> Option<u64> {
        self.entries.back().map(|e| e.record.seq)
    }

    /// Append time of the oldest record held, Unix ms.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.entries.front().map(|e| e.record.appended_ms)
    }

    pub fn counters(&self) -> WindowCounters {
        self.counters
    }

    /// A new connection: nothing is in flight on it; records with sequence numbers up to
    /// `spooled_through` count as replayed when first sent.
    pub fn on_connected(&mut self, spooled_through: u64) {
        self.reset_connection();
        self.replay_until = spooled_through;
        self.cycle = self.client_inflight;
    }

    /// The server's receive maximum (MQTT 5), which bounds rumqttc's packet-id cycle on this
    /// connection. Call after [`Window::on_connected`].
    pub fn limit_cycle(&mut self, receive_maximum: u16) {
        self.cycle = self.client_inflight.min(u64::from(receive_maximum.max(1)));
    }

    /// The connection is gone: whatever was submitted on it is handed out again on the next one.
    pub fn on_disconnected(&mut self) {
        self.reset_connection();
    }

    fn reset_connection(&mut self) {
        self.outstanding.clear();
        self.awaiting_sent.clear();
        self.by_pkid.clear();
        self.next_index = 0;
        for entry in &mut self.entries {
            if entry.state == State::Submitted {
                entry.state = State::Unsent;
            }
        }
    }

    fn may_submit(&self) -> bool {
        match self.outstanding.keys().next() {
            Some(oldest) => self.next_index - oldest + 1 < self.cycle,
            None => true,
        }
    }

    fn register(&mut self, target: Target, qos: u8) {
        let index = self.next_index;
        self.next_index += 1;
        self.outstanding.insert(index, target);
        self.awaiting_sent.push_back((index, target, qos));
    }

    /// Registers the availability message about to be handed to the client; false when the window is
    /// full (then it is not sent).
    pub fn submit_control(&mut self, qos: u8) -> bool {
        if !self.may_submit() {
            return false;
        }
        self.register(Target::Control, qos);
        true
    }

    /// The next record to hand to the client, registered as submitted; `None` when there is none or the
    /// packet-id span is used up.
    pub fn next_to_submit(&mut self) -> Option<Record> {
        if !self.may_submit() || (self.single_file && !self.outstanding.is_empty()) {
            return None;
        }
        let position = self.entries.iter().position(|e| e.state == State::Unsent)?;
        let entry = &mut self.entries[position];
        entry.state = State::Submitted;
        if entry.on_wire {
            self.counters.resent += 1;
            entry.on_wire = false;
        } else if !entry.sent_before && entry.record.seq <= self.replay_until {
            self.counters.replayed += 1;
        }
        entry.sent_before = true;
        self.counters.submitted += 1;
        let record = entry.record.clone();
        self.register(Target::Record(record.seq), record.qos);
        Some(record)
    }

    /// Sends one record at a time (`true`), or as many as the window holds.
    pub fn set_single_file(&mut self, single_file: bool) {
        self.single_file = single_file;
    }

    /// Sequence number of the oldest record held when it reached the wire on the connection just lost
    /// (or the current one) without an acknowledgement: the one a broker that closes the connection on
    /// a publish it refuses would have closed it for.
    pub fn oldest_on_wire(&self) -> Option<u64> {
        self.entries
            .front()
            .filter(|e| e.on_wire)
            .map(|e| e.record.seq)
    }

    /// Between connections: removes the oldest record held (refused by the broker), as if acknowledged.
    /// Returns it and the new "acknowledged through" sequence number.
    pub fn set_aside_oldest(&mut self) -> Option<(Record, u64)> {
        if !self.outstanding.is_empty() {
            return None;
        }
        let entry = self.entries.pop_front()?;
        let mut through = entry.record.seq;
        while self
            .entries
            .front()
            .is_some_and(|e| e.state == State::Acked)
        {
            if let Some(acked) = self.entries.pop_front() {
                self.counters.acked += 1;
                through = acked.record.seq;
            }
        }
        Some((entry.record, through))
    }

    /// The client wrote the next queued publish with packet id `pkid` (0 for QoS 0). Returns the new
    /// "acknowledged through" sequence number when it moved.
    pub fn on_sent(&mut self, pkid: u16) -> Result<Option<u64>, WindowError> {
        let (index, target, qos) = self
            .awaiting_sent
            .pop_front()
            .ok_or(WindowError::UnexpectedSent)?;
        if let Target::Record(seq) = target {
            if let Some(entry) = self.entry_mut(seq) {
                entry.on_wire = true;
            }
        }
        if qos == 0 || pkid == 0 {
            return Ok(self.complete(index, target));
        }
        if self.by_pkid.insert(pkid, (index, target)).is_some() {
            return Err(WindowError::PacketIdReused(pkid));
        }
        Ok(None)
    }

    /// The broker refused packet id `pkid` (an MQTT 5 reason code): its record, now done with as if
    /// acknowledged, and the new "acknowledged through" sequence number when it moved. `None` for an
    /// unknown id or the availability message.
    pub fn on_refused(&mut self, pkid: u16) -> Option<(Record, Option<u64>)> {
        let (index, target) = self.by_pkid.remove(&pkid)?;
        let record = match target {
            Target::Record(seq) => self.entry_mut(seq).map(|e| e.record.clone()),
            Target::Control => None,
        };
        let through = self.complete(index, target);
        record.map(|r| (r, through))
    }

    /// The broker acknowledged packet id `pkid` (PUBACK, or PUBCOMP at QoS 2). Unknown ids are ignored
    /// (an acknowledgement of an earlier connection's publish).
    pub fn on_acked(&mut self, pkid: u16) -> Option<u64> {
        let (index, target) = self.by_pkid.remove(&pkid)?;
        self.complete(index, target)
    }

    fn complete(&mut self, index: u64, target: Target) -> Option<u64> {
        self.outstanding.remove(&index);
        let Target::Record(seq) = target else {
            return None;
        };
        if let Some(entry) = self.entry_mut(seq) {
            entry.state = State::Acked;
            entry.on_wire = false;
        }
        let mut through = None;
        while self
            .entries
            .front()
            .is_some_and(|e| e.state == State::Acked)
        {
            if let Some(entry) = self.entries.pop_front() {
                self.counters.acked += 1;
                through = Some(entry.record.seq);
            }
        }
        through
    }

    fn entry_mut(&mut self, seq: u64) -> Option<&mut Entry> {
        let position = self
            .entries
            .binary_search_by_key(&seq, |e| e.record.seq)
            .ok()?;
        self.entries.get_mut(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, qos: u8) -> Record {
        Record {
            seq,
            appended_ms: seq,
            topic: "t".into(),
            payload: vec![],
            qos,
            retain: false,
        }
    }

    /// Plays rumqttc's packet-id cycle: 1..=inflight, then 1 again.
    struct Ids {
        last: u16,
        cycle: u16,
    }

    impl Ids {
        fn next(&mut self, qos: u8) -> u16 {
            if qos == 0 {
                return 0;
            }
            self.last = if self.last >= self.cycle {
                1
            } else {
                self.last + 1
            };
            self.last
        }
    }

    #[test]
    fn acknowledgements_out_of_order_advance_in_order() {
        let mut window = Window::new(4);
        window.push((1..=4).map(|s| record(s, 1)).collect());
        window.on_connected(0);
        let mut ids = Ids {
            last: 0,
            cycle: window.client_inflight(),
        };
        let mut pkids = Vec::new();
        while let Some(r) = window.next_to_submit() {
            let pkid = ids.next(r.qos);
            assert_eq!(window.on_sent(pkid).unwrap(), None);
            pkids.push(pkid);
        }
        assert_eq!(pkids.len(), 4);
        assert_eq!(window.on_acked(pkids[1]), None);
        assert_eq!(window.on_acked(pkids[0]), Some(2));
        assert_eq!(window.on_acked(pkids[3]), None);
        assert_eq!(window.on_acked(pkids[2]), Some(4));
        assert!(window.is_empty());
        assert_eq!(window.counters().acked, 4);
    }

    #[test]
    fn qos0_is_done_when_written() {
        let mut window = Window::new(4);
        window.push(vec![record(1, 0), record(2, 1)]);
        window.on_connected(0);
        window.next_to_submit().unwrap();
        window.next_to_submit().unwrap();
        assert_eq!(window.on_sent(0).unwrap(), Some(1));
        assert_eq!(window.on_sent(1).unwrap(), None);
        assert_eq!(window.on_acked(1), Some(2));
    }

    #[test]
    fn a_reconnect_resends_the_unacknowledged_and_counts_possible_duplicates() {
        let mut window = Window::new(8);
        window.push((1..=5).map(|s| record(s, 1)).collect());
        window.on_connected(5);
        let mut ids = Ids {
            last: 0,
            cycle: window.client_inflight(),
        };
        let mut pkids = Vec::new();
        for _ in 0..3 {
            let r = window.next_to_submit().unwrap();
            pkids.push(ids.next(r.qos));
        }
        // Two of three reached the wire, one acknowledged.
        window.on_sent(pkids[0]).unwrap();
        window.on_sent(pkids[1]).unwrap();
        assert_eq!(window.on_acked(pkids[0]), Some(1));
        window.on_disconnected();
        window.on_connected(5);
        let again: Vec<u64> =
            std::iter::from_fn(|| window.next_to_submit().map(|r| r.seq)).collect();
        assert_eq!(again, vec![2, 3, 4, 5]);
        let counters = window.counters();
        assert_eq!(counters.resent, 1, "only seq 2 had reached the wire");
        assert_eq!(
            counters.replayed, 5,
            "each record counted once, on its first send"
        );
    }

    #[test]
    fn single_file_sends_one_record_after_the_control_and_the_refused_one_is_set_aside() {
        let mut window = Window::new(8);
        window.push((1..=4).map(|s| record(s, 1)).collect());
        window.on_connected(0);
        let mut ids = Ids {
            last: 0,
            cycle: window.client_inflight(),
        };
        // All four reach the wire; 2 and 3 are acknowledged, then the broker closes.
        let pkids: Vec<u16> = std::iter::from_fn(|| window.next_to_submit())
            .map(|r| ids.next(r.qos))
            .collect();
        for pkid in &pkids {
            window.on_sent(*pkid).unwrap();
        }
        window.on_acked(pkids[1]);
        window.on_acked(pkids[2]);
        window.on_disconnected();
        assert_eq!(window.oldest_on_wire(), Some(1));

        window.set_single_file(true);
        window.on_connected(0);
        assert!(window.submit_control(1));
        assert!(
            window.next_to_submit().is_none(),
            "the control is in flight"
        );
        let control = ids.next(1);
        window.on_sent(control).unwrap();
        window.on_acked(control);
        assert_eq!(window.next_to_submit().map(|r| r.seq), Some(1));
        assert!(window.next_to_submit().is_none(), "one record at a time");
        assert!(
            window.set_aside_oldest().is_none(),
            "not while it is outstanding"
        );
        window.on_disconnected();
        let (refused, through) = window.set_aside_oldest().unwrap();
        assert_eq!((refused.seq, through), (1, 3), "2 and 3 were acknowledged");
        assert_eq!(window.len(), 1);
        assert_eq!(window.oldest_on_wire(), Some(4));
    }

    #[test]
    fn a_refused_record_is_done_with_and_returned_and_a_receive_maximum_narrows_the_span() {
        let mut window = Window::new(8);
        window.push((1..=3).map(|s| record(s, 1)).collect());
        window.on_connected(0);
        window.limit_cycle(3);
        let mut ids = Ids { last: 0, cycle: 3 };
        let submitted: Vec<u64> =
            std::iter::from_fn(|| window.next_to_submit().map(|r| r.seq)).collect();
        assert_eq!(
            submitted,
            vec![1, 2],
            "a cycle of 3 ids: 2 outstanding at most"
        );
        let first = ids.next(1);
        let second = ids.next(1);
        window.on_sent(first).unwrap();
        window.on_sent(second).unwrap();
        assert_eq!(
            window.on_refused(second).map(|(r, t)| (r.seq, t)),
            Some((2, None))
        );
        assert_eq!(
            window.on_acked(first),
            Some(2),
            "1 acknowledged, 2 refused: through 2"
        );
        assert_eq!(window.on_refused(99), None, "an unknown id");
        window.on_connected(0);
        assert_eq!(window.next_to_submit().map(|r| r.seq), Some(3));
    }

    #[test]
    fn the_span_never_lets_a_packet_id_be_reused_while_unacknowledged() {
        let mut window = Window::new(3);
        let mut ids = Ids {
            last: 0,
            cycle: window.client_inflight(),
        };
        window.on_connected(0);
        assert!(window.submit_control(1));
        let control = ids.next(1);
        window.on_sent(control).unwrap();
        let mut seq = 0;
        let mut live: Vec<u16> = Vec::new();
        for round in 0..50 {
            while window.room() > 0 {
                seq += 1;
                window.push(vec![record(seq, 1 + (seq % 2) as u8)]);
            }
            while let Some(r) = window.next_to_submit() {
                let pkid = ids.next(r.qos);
                assert!(
                    !live.contains(&pkid),
                    "packet id {pkid} reused in round {round}"
                );
                window.on_sent(pkid).unwrap();
                live.push(pkid);
            }
            // Acknowledge the newest first: the oldest stays and holds the span.
            if let Some(newest) = live.pop() {
                window.on_acked(newest);
            }
            if round % 3 == 0 && !live.is_empty() {
                let oldest = live.remove(0);
                window.on_acked(oldest);
            }
            if round == 10 {
                window.on_acked(control);
            }
        }
        assert!(seq > 40, "the window kept moving: {seq} records");
    }
}
