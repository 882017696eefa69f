//! Recording a machine's run and replaying it (the file format and the reasoning are in
//! [`crate::state::replay`]).
//!
//! While a recording runs, every call a host makes that changes what the guest sees (a run,
//! with its host clock reading in real time; a key, a mouse move, a serial byte; a disk
//! wake-up; the reset button) is logged with the instruction count it came at, and each
//! drive's image has a tap that logs the answers that were not data. A host that does
//! something a replay cannot do again (changes a disc, loads a kernel into RAM itself) ends the
//! recording first: what was recorded up to there stays replayable.

use super::{Machine, TimeMode, IMAGE_SLOTS};
use crate::block::ReadTap;
use crate::state::replay::{Divergence, Event, Playback, Recorder, Recording};

impl Machine {
    /// Start recording from now (a recording already running is ended and dropped).
    pub fn start_recording(&mut self) {
        self.end_recording();
        self.ended_recording = None;
        let start = self.save_state();
        // The real-time clock's last speed sample is not in a state: start measuring afresh,
        // as the machine restored from `start` for a replay will.
        self.rate_sample = None;
        let recorder = Recorder::new(start, self.config.time_mode == TimeMode::Realtime);
        self.set_taps(|slot| Some(recorder.tap(slot)));
        self.recorder = Some(recorder);
    }

    /// Whether a recording is running.
    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// End the running recording here (if one runs); [`Machine::take_recording`] returns it.
    /// Hosts call this before they do something a replay could not repeat.
    pub fn end_recording(&mut self) {
        if let Some(recorder) = self.recorder.take() {
            self.set_taps(|_| None);
            let pending = self.board.borrow().com1.borrow().output().to_vec();
            self.ended_recording = Some(recorder.finish(self.cpu.instructions, &pending));
        }
    }

    /// The recording made since [`Machine::start_recording`], ended now if it still runs.
    pub fn take_recording(&mut self) -> Option<Recording> {
        self.end_recording();
        self.ended_recording.take()
    }

    /// Log `event` if a recording runs (`at`: the instruction count now).
    pub(super) fn record(&mut self, event: impl FnOnce(u64) -> Event) {
        if let Some(r) = self.recorder.as_mut() {
            r.event(event(self.cpu.instructions));
        }
    }

    /// Put a tap (or none) between each drive and its image.
    fn set_taps(&mut self, mut tap: impl FnMut(usize) -> Option<Box<dyn ReadTap>>) {
        let board = self.board.borrow();
        for slot in 0..IMAGE_SLOTS {
            board.with_image(slot, |overlay| overlay.set_tap(tap(slot)));
        }
    }

    /// Replay `rec` on this machine, which must be the one restored from `rec.start` (with the
    /// same images). `output` gets COM1's output as it comes. Ends with an error at the first
    /// place the run goes another way than the recorded one.
    pub fn replay(
        &mut self,
        rec: &Recording,
        mut output: impl FnMut(&[u8]),
    ) -> Result<(), Divergence> {
        let (taps, trouble) = Playback::for_recording(rec, IMAGE_SLOTS);
        let mut taps = taps.into_iter().map(Some).collect::<Vec<_>>();
        self.set_taps(|slot| taps[slot].take().map(|t| Box::new(t) as Box<dyn ReadTap>));
        let result = self.replay_events(rec, &mut output, &trouble);
        self.set_taps(|_| None);
        result
    }

    fn replay_events(
        &mut self,
        rec: &Recording,
        output: &mut impl FnMut(&[u8]),
        trouble: &std::cell::RefCell<Option<String>>,
    ) -> Result<(), Divergence> {
        let mut sum = flate2::Crc::new();
        let mut take_output = |m: &mut Machine| {
            let out = m.serial_output(0);
            sum.update(&out);
            output(&out);
        };
        for event in &rec.events {
            let now = self.cpu.instructions;
            if let Some(at) = event.at().filter(|&at| at != now) {
                return Err(Divergence {
                    at: now,
                    why: format!("the recording has {event:?} at instruction {at}"),
                });
            }
            match event {
                Event::Run { budget, host_ns } => {
                    // A reset the guest asks for happens inside the run, as it did when
                    // recorded.
                    match host_ns {
                        Some(h) => self.run_realtime(*h, *budget),
                        None => self.run(*budget),
                    };
                    take_output(self);
                }
                Event::Serial { port, byte, .. } => {
                    if !self.serial_input(usize::from(*port), *byte) {
                        return Err(Divergence {
                            at: now,
                            why: format!(
                                "serial port {port} did not take {byte:#04x} as it did when \
                                 recorded"
                            ),
                        });
                    }
                }
                Event::Key { make, pressed, .. } => self.key_event(make, *pressed),
                Event::Mouse {
                    dx,
                    dy,
                    dz,
                    buttons,
                    ..
                } => self.mouse_move(*dx, *dy, *dz, *buttons),
                Event::StorageWake { .. } => self.storage_wake(),
                Event::Reset { .. } => self.reset(),
            }
            if let Some(why) = trouble.borrow_mut().take() {
                return Err(Divergence {
                    at: self.cpu.instructions,
                    why,
                });
            }
        }
        take_output(self);
        let end = self.cpu.instructions;
        if end != rec.end_instructions
            || u64::from(sum.amount()) != rec.output_len
            || sum.sum() != rec.output_crc
        {
            return Err(Divergence {
                at: end,
                why: format!(
                    "it ended at instruction {end} with {} bytes of output{}; the recording \
                     ended at {} with {}",
                    sum.amount(),
                    if u64::from(sum.amount()) == rec.output_len {
                        " (other bytes)"
                    } else {
                        ""
                    },
                    rec.end_instructions,
                    rec.output_len
                ),
            });
        }
        Ok(())
    }
}
