//! Recordings: a run of a machine as its starting state and everything the host did to it, so
//! that the run can be replayed exactly. wasm86's machine is deterministic: given the same
//! state and the same calls (how far to run, with which host clock in real-time mode, which
//! input at which instruction), it retires the same instructions and prints the same bytes. A
//! recording is that list of calls, plus what the drives' images answered where the answer
//! depended on the host (a streamed read still on its way, a fetch that failed); replaying it
//! makes the calls again, gives the drives the same answers at the same reads, and checks, at
//! every input, that the machine is where it was when the input came, so a replay that
//! diverges says at which instruction.
//!
//! The machine records itself ([`crate::machine::Machine::start_recording`]): every host,
//! the CLI and the page alike, gets its keys, mouse, serial bytes, clock readings and disk
//! wake-ups recorded without doing anything for it.
//!
//! # File layout (little-endian)
//!
//! ```text
//! "WASM86RP"  magic
//! u32         format version (VERSION)
//! u32         length of the body, then the body: postcard of `Recording`
//! u32         CRC-32 of everything before it
//! ```

use super::{check_header, crc32, StateError};
use crate::block::{BlockError, ReadStatus, ReadTap};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"WASM86RP";
/// The format this build writes and reads (2: keys, mouse, resets, disk wake-ups and the
/// drives' answers; 3: the same file, from a build whose real-time clock adapts its rate as
/// `Machine::adapt_rate` does now).
pub const VERSION: u32 = 3;
/// The version before, still read when it was made in deterministic time: only a real-time
/// run depends on how the clock adapted its rate, so only such a recording would not replay.
const DETERMINISTIC_ONLY: u32 = 2;

/// One thing the host did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Run the machine for at most `budget` instructions: `Machine::run`, or, with a host
    /// clock reading (ns), `Machine::run_realtime`.
    Run { budget: u64, host_ns: Option<u64> },
    /// A byte taken by serial port `port` when `at` instructions had retired.
    Serial { at: u64, port: u8, byte: u8 },
    /// A PS/2 key went down or up (`make`: its scan code set 2 make sequence).
    Key {
        at: u64,
        make: Vec<u8>,
        pressed: bool,
    },
    /// The PS/2 mouse moved or its buttons changed.
    Mouse {
        at: u64,
        dx: i32,
        dy: i32,
        dz: i32,
        buttons: u8,
    },
    /// The host had data for the drives (`Machine::storage_wake`).
    StorageWake { at: u64 },
    /// The host pressed reset (`Machine::reset`).
    Reset { at: u64 },
}

impl Event {
    /// The instruction count at which an input came (`None` for a run).
    pub fn at(&self) -> Option<u64> {
        match *self {
            Event::Run { .. } => None,
            Event::Serial { at, .. }
            | Event::Key { at, .. }
            | Event::Mouse { at, .. }
            | Event::StorageWake { at }
            | Event::Reset { at } => Some(at),
        }
    }
}

/// What a drive's image answered to one of its reads, where that was not the data: the read
/// is the `read`-th (from 0) that drive `slot` made of its image since the recording began.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskAnswer {
    pub slot: u8,
    pub read: u64,
    /// `Ok(Pending)` (the bytes were still being fetched) or the error the drive got.
    pub answer: Result<ReadStatus, BlockError>,
}

/// A run: where it started, what the host did, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recording {
    /// The machine at the start (a state file).
    pub start: Vec<u8>,
    /// Real-time mode (the runs carry host clock readings).
    pub realtime: bool,
    pub events: Vec<Event>,
    /// The drives' answers that were not data, in the order they came.
    pub disk_answers: Vec<DiskAnswer>,
    /// Instructions retired at the end.
    pub end_instructions: u64,
    /// The serial output of the run (COM1): its length and CRC-32.
    pub output_len: u64,
    pub output_crc: u32,
}

impl Recording {
    /// The file form.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Plain data into a Vec: serialising cannot fail.
        let body = postcard::to_stdvec(self).unwrap_or_default();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Read the file form, checking its magic, version, length and checksum.
    pub fn from_bytes(file: &[u8]) -> Result<Recording, StateError> {
        let version = check_header(
            file,
            MAGIC,
            DETERMINISTIC_ONLY..=VERSION,
            StateError::NotARecording,
        )?;
        let word = |at: usize| -> Result<u32, StateError> {
            file.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(StateError::Truncated("in the header"))
        };
        let len = word(12)? as usize;
        let end = 16usize
            .checked_add(len)
            .filter(|&e| e + 4 <= file.len())
            .ok_or(StateError::Truncated("inside the recording"))?;
        if end + 4 != file.len() {
            return Err(StateError::Corrupt(format!(
                "{} bytes after the recording",
                file.len() - end - 4
            )));
        }
        if crc32(&file[..end]) != word(end)? {
            return Err(StateError::Checksum);
        }
        let recording: Recording = postcard::from_bytes(&file[16..end])
            .map_err(|e| StateError::Corrupt(format!("the recording: {e}")))?;
        if version == DETERMINISTIC_ONLY && recording.realtime {
            return Err(StateError::OlderRealtimeRecording);
        }
        Ok(recording)
    }
}

/// A recording being made (see [`crate::machine::Machine::start_recording`]).
pub struct Recorder {
    recording: Recording,
    output: flate2::Crc,
    answers: Rc<RefCell<Vec<DiskAnswer>>>,
}

impl Recorder {
    /// A recording of a machine that is now in the state `start`.
    pub fn new(start: Vec<u8>, realtime: bool) -> Recorder {
        Recorder {
            recording: Recording {
                start,
                realtime,
                events: Vec::new(),
                disk_answers: Vec::new(),
                end_instructions: 0,
                output_len: 0,
                output_crc: 0,
            },
            output: flate2::Crc::new(),
            answers: Rc::default(),
        }
    }

    /// The host did `event`.
    pub fn event(&mut self, event: Event) {
        self.recording.events.push(event);
    }

    /// The host took `bytes` of COM1 output.
    pub fn output(&mut self, bytes: &[u8]) {
        self.output.update(bytes);
    }

    /// What goes between drive `slot`'s image and the drive while recording.
    pub fn tap(&self, slot: usize) -> Box<dyn ReadTap> {
        Box::new(Tape {
            slot: slot as u8,
            reads: 0,
            answers: Rc::clone(&self.answers),
        })
    }

    /// The recording, ended when `end_instructions` had retired (`pending_output`: COM1 output
    /// the host has not taken yet).
    pub fn finish(mut self, end_instructions: u64, pending_output: &[u8]) -> Recording {
        self.output.update(pending_output);
        self.recording.end_instructions = end_instructions;
        self.recording.output_len = u64::from(self.output.amount());
        self.recording.output_crc = self.output.sum();
        self.recording.disk_answers = self.answers.take();
        self.recording
    }
}

/// Logs the answers of one drive's image that were not data.
struct Tape {
    slot: u8,
    reads: u64,
    answers: Rc<RefCell<Vec<DiskAnswer>>>,
}

impl ReadTap for Tape {
    fn answer(&mut self, answer: Result<ReadStatus, BlockError>) -> Result<ReadStatus, BlockError> {
        if answer != Ok(ReadStatus::Ready) {
            self.answers.borrow_mut().push(DiskAnswer {
                slot: self.slot,
                read: self.reads,
                answer: answer.clone(),
            });
        }
        self.reads += 1;
        answer
    }
}

/// Where a replay went another way than the recording.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the replay diverged at instruction {at}: {why}")]
pub struct Divergence {
    /// Instructions retired when it was seen.
    pub at: u64,
    pub why: String,
}

/// Gives one drive the recorded answers at the reads that had them, and notes a read whose
/// data the replay's image does not have at once (the recording had it).
pub(crate) struct Playback {
    reads: u64,
    answers: VecDeque<DiskAnswer>,
    trouble: Rc<RefCell<Option<String>>>,
}

impl Playback {
    /// The playback taps for every drive of `rec`, by slot, and the cell where they report a
    /// read that went another way.
    pub(crate) fn for_recording(
        rec: &Recording,
        slots: usize,
    ) -> (Vec<Playback>, Rc<RefCell<Option<String>>>) {
        let trouble = Rc::new(RefCell::new(None));
        let taps = (0..slots)
            .map(|slot| Playback {
                reads: 0,
                answers: rec
                    .disk_answers
                    .iter()
                    .filter(|a| usize::from(a.slot) == slot)
                    .cloned()
                    .collect(),
                trouble: Rc::clone(&trouble),
            })
            .collect();
        (taps, trouble)
    }
}

impl ReadTap for Playback {
    fn answer(&mut self, answer: Result<ReadStatus, BlockError>) -> Result<ReadStatus, BlockError> {
        let read = self.reads;
        self.reads += 1;
        if self.answers.front().is_some_and(|a| a.read == read) {
            return self.answers.pop_front().map_or(answer, |a| a.answer);
        }
        if answer != Ok(ReadStatus::Ready) {
            self.trouble.borrow_mut().get_or_insert_with(|| {
                format!("the image answered {answer:?} to a read the recording had the data for")
            });
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recording {
        Recording {
            start: b"a state".to_vec(),
            realtime: false,
            events: vec![
                Event::Run {
                    budget: 2_000_000,
                    host_ns: None,
                },
                Event::Serial {
                    at: 2_000_003,
                    port: 0,
                    byte: b'l',
                },
                Event::Key {
                    at: 2_000_010,
                    make: vec![0xe0, 0x75],
                    pressed: true,
                },
                Event::Mouse {
                    at: 2_000_011,
                    dx: -3,
                    dy: 4,
                    dz: 0,
                    buttons: 1,
                },
                Event::StorageWake { at: 2_000_012 },
                Event::Reset { at: 2_000_013 },
            ],
            disk_answers: vec![DiskAnswer {
                slot: 2,
                read: 7,
                answer: Err(BlockError::Io("gone".into())),
            }],
            end_instructions: 9,
            output_len: 4,
            output_crc: crc32(b"ls\r\n"),
        }
    }

    #[test]
    fn a_recording_reads_back_and_any_damage_is_an_error() {
        let file = sample().to_bytes();
        assert_eq!(Recording::from_bytes(&file), Ok(sample()));
        for n in 0..file.len() {
            assert!(Recording::from_bytes(&file[..n]).is_err(), "cut at {n}");
        }
        for byte in 0..file.len() {
            let mut f = file.clone();
            f[byte] ^= 0x20;
            assert!(Recording::from_bytes(&f).is_err(), "byte {byte} flipped");
        }
        let mut newer = file.clone();
        newer[8] = 9;
        assert!(matches!(
            Recording::from_bytes(&newer),
            Err(StateError::NewerVersion { found: 9, .. })
        ));
        assert_eq!(
            Recording::from_bytes(b"WASM86STnot a recording"),
            Err(StateError::NotARecording)
        );
    }

    /// A recording in the format before (version 2) as an older build wrote it.
    fn as_version_2(r: &Recording) -> Vec<u8> {
        let mut file = r.to_bytes();
        file[8..12].copy_from_slice(&2u32.to_le_bytes());
        let end = file.len() - 4;
        let crc = crc32(&file[..end]);
        file[end..].copy_from_slice(&crc.to_le_bytes());
        file
    }

    #[test]
    fn an_older_recording_replays_unless_it_was_made_in_real_time() {
        assert_eq!(
            Recording::from_bytes(&as_version_2(&sample())),
            Ok(sample())
        );
        let realtime = Recording {
            realtime: true,
            ..sample()
        };
        assert_eq!(
            Recording::from_bytes(&realtime.to_bytes()),
            Ok(realtime.clone())
        );
        assert_eq!(
            Recording::from_bytes(&as_version_2(&realtime)),
            Err(StateError::OlderRealtimeRecording)
        );
    }
}
