//! (to be written)

use super::decode::{undefined, Decoder, Handler};
use super::exception::Fault;

/// Decode the opcodes of this group.
pub fn decode(_d: &mut Decoder, _op: u16) -> Fault<Handler> {
    Ok(undefined())
}
