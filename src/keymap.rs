//! Host keys to PC keys: `KeyboardEvent.code` names (the W3C "UI Events KeyboardEvent code
//! Values", which name the *physical* key whatever the host layout) to PS/2 scan code set 2 make
//! sequences, and characters to the key strokes that type them on a US keyboard.
//!
//! The keyboard model ([`crate::dev::ps2`]) takes set-2 make sequences and derives the break
//! sequences itself, so this table is all a host needs. Translation to set 1 (what Linux reads
//! with the i8042's XLAT bit on, the default) happens in the controller.
//!
//! Deliberately left out: the "fake shift" codes a real keyboard wraps around the cursor block
//! while Shift or Num Lock is active (Linux's atkbd drops them), Ctrl+Pause (Break, `E0 7E`) and
//! Alt+PrintScreen (SysRq, `84`), which a browser does not report as distinct codes, and the
//! Korean Hangul/Hanja keys, which send a make code without a break.

/// `KeyboardEvent.code` → set-2 make sequence, for every key of a 104/105-key PC keyboard plus
/// the Japanese/Brazilian extra keys and the common multimedia keys.
const KEYS: &[(&str, &[u8])] = &[
    // Function row.
    ("Escape", &[0x76]),
    ("F1", &[0x05]),
    ("F2", &[0x06]),
    ("F3", &[0x04]),
    ("F4", &[0x0C]),
    ("F5", &[0x03]),
    ("F6", &[0x0B]),
    ("F7", &[0x83]),
    ("F8", &[0x0A]),
    ("F9", &[0x01]),
    ("F10", &[0x09]),
    ("F11", &[0x78]),
    ("F12", &[0x07]),
    // Print Screen is two codes (a fake Left Shift, then E0 7C); Pause is an E1 sequence that
    // the keyboard sends on press only.
    ("PrintScreen", &[0xE0, 0x12, 0xE0, 0x7C]),
    ("ScrollLock", &[0x7E]),
    ("Pause", &[0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77]),
    // Number row.
    ("Backquote", &[0x0E]),
    ("Digit1", &[0x16]),
    ("Digit2", &[0x1E]),
    ("Digit3", &[0x26]),
    ("Digit4", &[0x25]),
    ("Digit5", &[0x2E]),
    ("Digit6", &[0x36]),
    ("Digit7", &[0x3D]),
    ("Digit8", &[0x3E]),
    ("Digit9", &[0x46]),
    ("Digit0", &[0x45]),
    ("Minus", &[0x4E]),
    ("Equal", &[0x55]),
    ("IntlYen", &[0x6A]),
    ("Backspace", &[0x66]),
    // Top letter row.
    ("Tab", &[0x0D]),
    ("KeyQ", &[0x15]),
    ("KeyW", &[0x1D]),
    ("KeyE", &[0x24]),
    ("KeyR", &[0x2D]),
    ("KeyT", &[0x2C]),
    ("KeyY", &[0x35]),
    ("KeyU", &[0x3C]),
    ("KeyI", &[0x43]),
    ("KeyO", &[0x44]),
    ("KeyP", &[0x4D]),
    ("BracketLeft", &[0x54]),
    ("BracketRight", &[0x5B]),
    ("Backslash", &[0x5D]),
    // Home row.
    ("CapsLock", &[0x58]),
    ("KeyA", &[0x1C]),
    ("KeyS", &[0x1B]),
    ("KeyD", &[0x23]),
    ("KeyF", &[0x2B]),
    ("KeyG", &[0x34]),
    ("KeyH", &[0x33]),
    ("KeyJ", &[0x3B]),
    ("KeyK", &[0x42]),
    ("KeyL", &[0x4B]),
    ("Semicolon", &[0x4C]),
    ("Quote", &[0x52]),
    ("Enter", &[0x5A]),
    // Bottom row (IntlBackslash is the 105th key, between Left Shift and Z).
    ("ShiftLeft", &[0x12]),
    ("IntlBackslash", &[0x61]),
    ("KeyZ", &[0x1A]),
    ("KeyX", &[0x22]),
    ("KeyC", &[0x21]),
    ("KeyV", &[0x2A]),
    ("KeyB", &[0x32]),
    ("KeyN", &[0x31]),
    ("KeyM", &[0x3A]),
    ("Comma", &[0x41]),
    ("Period", &[0x49]),
    ("Slash", &[0x4A]),
    ("IntlRo", &[0x51]),
    ("ShiftRight", &[0x59]),
    // Space bar row.
    ("ControlLeft", &[0x14]),
    ("MetaLeft", &[0xE0, 0x1F]),
    ("AltLeft", &[0x11]),
    ("NonConvert", &[0x67]),
    ("Space", &[0x29]),
    ("Convert", &[0x64]),
    ("KanaMode", &[0x13]),
    ("AltRight", &[0xE0, 0x11]),
    ("MetaRight", &[0xE0, 0x27]),
    ("ContextMenu", &[0xE0, 0x2F]),
    ("ControlRight", &[0xE0, 0x14]),
    // Editing and cursor blocks.
    ("Insert", &[0xE0, 0x70]),
    ("Home", &[0xE0, 0x6C]),
    ("PageUp", &[0xE0, 0x7D]),
    ("Delete", &[0xE0, 0x71]),
    ("End", &[0xE0, 0x69]),
    ("PageDown", &[0xE0, 0x7A]),
    ("ArrowUp", &[0xE0, 0x75]),
    ("ArrowLeft", &[0xE0, 0x6B]),
    ("ArrowDown", &[0xE0, 0x72]),
    ("ArrowRight", &[0xE0, 0x74]),
    // Numeric keypad.
    ("NumLock", &[0x77]),
    ("NumpadDivide", &[0xE0, 0x4A]),
    ("NumpadMultiply", &[0x7C]),
    ("NumpadSubtract", &[0x7B]),
    ("NumpadAdd", &[0x79]),
    ("NumpadEnter", &[0xE0, 0x5A]),
    ("NumpadDecimal", &[0x71]),
    ("NumpadComma", &[0x6D]),
    ("NumpadEqual", &[0x0F]),
    ("Numpad0", &[0x70]),
    ("Numpad1", &[0x69]),
    ("Numpad2", &[0x72]),
    ("Numpad3", &[0x7A]),
    ("Numpad4", &[0x6B]),
    ("Numpad5", &[0x73]),
    ("Numpad6", &[0x74]),
    ("Numpad7", &[0x6C]),
    ("Numpad8", &[0x75]),
    ("Numpad9", &[0x7D]),
    // Multimedia and ACPI keys (Microsoft's set-2 assignments, which Linux's atkbd knows).
    // Browsers have used two names for some of them over time; both are accepted.
    ("AudioVolumeMute", &[0xE0, 0x23]),
    ("VolumeMute", &[0xE0, 0x23]),
    ("AudioVolumeDown", &[0xE0, 0x21]),
    ("VolumeDown", &[0xE0, 0x21]),
    ("AudioVolumeUp", &[0xE0, 0x32]),
    ("VolumeUp", &[0xE0, 0x32]),
    ("MediaPlayPause", &[0xE0, 0x34]),
    ("MediaStop", &[0xE0, 0x3B]),
    ("MediaTrackNext", &[0xE0, 0x4D]),
    ("MediaTrackPrevious", &[0xE0, 0x15]),
    ("MediaSelect", &[0xE0, 0x50]),
    ("LaunchMail", &[0xE0, 0x48]),
    ("LaunchApp1", &[0xE0, 0x40]),
    ("LaunchApp2", &[0xE0, 0x2B]),
    ("BrowserSearch", &[0xE0, 0x10]),
    ("BrowserHome", &[0xE0, 0x3A]),
    ("BrowserBack", &[0xE0, 0x38]),
    ("BrowserForward", &[0xE0, 0x30]),
    ("BrowserStop", &[0xE0, 0x28]),
    ("BrowserRefresh", &[0xE0, 0x20]),
    ("BrowserFavorites", &[0xE0, 0x18]),
    ("Power", &[0xE0, 0x37]),
    ("Sleep", &[0xE0, 0x3F]),
    ("WakeUp", &[0xE0, 0x5E]),
];

/// The set-2 make sequence of the key `code` (a `KeyboardEvent.code`), or None if a PC keyboard
/// has no such key.
pub fn scancode(code: &str) -> Option<&'static [u8]> {
    KEYS.iter().find(|(c, _)| *c == code).map(|(_, m)| *m)
}

/// Whether the key sends nothing when released (Pause: its whole sequence comes on press).
pub fn has_break(make: &[u8]) -> bool {
    make.first() != Some(&0xE1)
}

/// The keys that type one character on a US keyboard: `key` with the modifiers held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stroke {
    /// The `KeyboardEvent.code` of the key.
    pub key: &'static str,
    /// Left Shift is held.
    pub shift: bool,
    /// Left Control is held.
    pub ctrl: bool,
}

impl Stroke {
    const fn plain(key: &'static str) -> Stroke {
        Stroke {
            key,
            shift: false,
            ctrl: false,
        }
    }
    const fn shifted(key: &'static str) -> Stroke {
        Stroke {
            key,
            shift: true,
            ctrl: false,
        }
    }
    const fn ctrl(key: &'static str) -> Stroke {
        Stroke {
            key,
            shift: false,
            ctrl: true,
        }
    }

    /// The key events in order: modifiers down, key down, key up, modifiers up. Each event is
    /// a set-2 make sequence and whether the key goes down.
    pub fn events(&self) -> Vec<(&'static [u8], bool)> {
        let mods: Vec<&'static str> = [(self.ctrl, "ControlLeft"), (self.shift, "ShiftLeft")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, k)| *k)
            .collect();
        let mut out = Vec::with_capacity(2 + 2 * mods.len());
        let Some(key) = scancode(self.key) else {
            return out;
        };
        for m in &mods {
            out.extend(scancode(m).map(|s| (s, true)));
        }
        out.push((key, true));
        out.push((key, false));
        for m in mods.iter().rev() {
            out.extend(scancode(m).map(|s| (s, false)));
        }
        out
    }
}

/// Unshifted and shifted characters of the US layout's punctuation keys.
const PUNCTUATION: &[(char, char, &str)] = &[
    ('`', '~', "Backquote"),
    ('-', '_', "Minus"),
    ('=', '+', "Equal"),
    ('[', '{', "BracketLeft"),
    (']', '}', "BracketRight"),
    ('\\', '|', "Backslash"),
    (';', ':', "Semicolon"),
    ('\'', '"', "Quote"),
    (',', '<', "Comma"),
    ('.', '>', "Period"),
    ('/', '?', "Slash"),
];

/// The shifted characters of the digit keys 1, 2, ... 9, 0.
const SHIFTED_DIGITS: &str = "!@#$%^&*()";
const DIGIT_KEYS: [&str; 10] = [
    "Digit1", "Digit2", "Digit3", "Digit4", "Digit5", "Digit6", "Digit7", "Digit8", "Digit9",
    "Digit0",
];
const LETTER_KEYS: [&str; 26] = [
    "KeyA", "KeyB", "KeyC", "KeyD", "KeyE", "KeyF", "KeyG", "KeyH", "KeyI", "KeyJ", "KeyK", "KeyL",
    "KeyM", "KeyN", "KeyO", "KeyP", "KeyQ", "KeyR", "KeyS", "KeyT", "KeyU", "KeyV", "KeyW", "KeyX",
    "KeyY", "KeyZ",
];

/// How to type `c` on a US keyboard, or None if no key stroke types it (non-ASCII text).
///
/// Line feed and carriage return are Enter, tab is Tab, backspace (0x08) and DEL (0x7F) are the
/// Backspace key (which sends DEL on a Linux console), escape is Escape, and the other control
/// characters are Ctrl + the key whose letter they encode (0x03 is Ctrl+C).
pub fn stroke_for(c: char) -> Option<Stroke> {
    let letter = |i: u8| LETTER_KEYS[usize::from(i)];
    Some(match c {
        'a'..='z' => Stroke::plain(letter(c as u8 - b'a')),
        'A'..='Z' => Stroke::shifted(letter(c as u8 - b'A')),
        '1'..='9' => Stroke::plain(DIGIT_KEYS[usize::from(c as u8 - b'1')]),
        '0' => Stroke::plain("Digit0"),
        ' ' => Stroke::plain("Space"),
        '\n' | '\r' => Stroke::plain("Enter"),
        '\t' => Stroke::plain("Tab"),
        '\x08' | '\x7F' => Stroke::plain("Backspace"),
        '\x1B' => Stroke::plain("Escape"),
        '\x1C' => Stroke::ctrl("Backslash"),
        '\x1D' => Stroke::ctrl("BracketRight"),
        '\x01'..='\x1A' => Stroke::ctrl(letter(c as u8 - 1)),
        _ => {
            if let Some(i) = SHIFTED_DIGITS.find(c) {
                return Some(Stroke::shifted(DIGIT_KEYS[i]));
            }
            let &(plain, _, key) = PUNCTUATION.iter().find(|(p, s, _)| *p == c || *s == c)?;
            if plain == c {
                Stroke::plain(key)
            } else {
                Stroke::shifted(key)
            }
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dev::ps2::{set2_break, translate};

    /// Set-1 bytes the guest reads with translation on (F0 becomes the break bit). Also the
    /// expectation of the input-pacing tests (`crate::input`).
    pub(crate) fn set1(set2: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut f0 = false;
        for &b in set2 {
            if b == 0xF0 {
                f0 = true;
            } else {
                out.push(translate(b) | if f0 { 0x80 } else { 0 });
                f0 = false;
            }
        }
        out
    }

    #[test]
    fn letters_and_extended_keys_have_their_set2_codes() {
        assert_eq!(scancode("KeyA"), Some(&[0x1C][..]));
        assert_eq!(scancode("ArrowUp"), Some(&[0xE0, 0x75][..]));
        assert_eq!(scancode("NumpadEnter"), Some(&[0xE0, 0x5A][..]));
        assert_eq!(scancode("F7"), Some(&[0x83][..]));
        assert_eq!(scancode("Fn"), None);
        assert_eq!(scancode(""), None);
        assert_eq!(scancode("keya"), None, "codes are case-sensitive");
    }

    /// Every key of a 105-key ISO keyboard (plus the JIS extras), as set-1 codes, which is what
    /// Linux's atkbd maps to key codes: this checks the set-2 table and the translation together
    /// against the well-known set-1 values.
    #[test]
    fn every_pc_key_translates_to_its_set1_code() {
        let expect: &[(&str, &[u8])] = &[
            ("Escape", &[0x01]),
            ("F1", &[0x3B]),
            ("F2", &[0x3C]),
            ("F3", &[0x3D]),
            ("F4", &[0x3E]),
            ("F5", &[0x3F]),
            ("F6", &[0x40]),
            ("F7", &[0x41]),
            ("F8", &[0x42]),
            ("F9", &[0x43]),
            ("F10", &[0x44]),
            ("F11", &[0x57]),
            ("F12", &[0x58]),
            ("PrintScreen", &[0xE0, 0x2A, 0xE0, 0x37]),
            ("ScrollLock", &[0x46]),
            ("Pause", &[0xE1, 0x1D, 0x45, 0xE1, 0x9D, 0xC5]),
            ("Backquote", &[0x29]),
            ("Digit1", &[0x02]),
            ("Digit2", &[0x03]),
            ("Digit3", &[0x04]),
            ("Digit4", &[0x05]),
            ("Digit5", &[0x06]),
            ("Digit6", &[0x07]),
            ("Digit7", &[0x08]),
            ("Digit8", &[0x09]),
            ("Digit9", &[0x0A]),
            ("Digit0", &[0x0B]),
            ("Minus", &[0x0C]),
            ("Equal", &[0x0D]),
            ("Backspace", &[0x0E]),
            ("Tab", &[0x0F]),
            ("KeyQ", &[0x10]),
            ("KeyW", &[0x11]),
            ("KeyE", &[0x12]),
            ("KeyR", &[0x13]),
            ("KeyT", &[0x14]),
            ("KeyY", &[0x15]),
            ("KeyU", &[0x16]),
            ("KeyI", &[0x17]),
            ("KeyO", &[0x18]),
            ("KeyP", &[0x19]),
            ("BracketLeft", &[0x1A]),
            ("BracketRight", &[0x1B]),
            ("Enter", &[0x1C]),
            ("ControlLeft", &[0x1D]),
            ("KeyA", &[0x1E]),
            ("KeyS", &[0x1F]),
            ("KeyD", &[0x20]),
            ("KeyF", &[0x21]),
            ("KeyG", &[0x22]),
            ("KeyH", &[0x23]),
            ("KeyJ", &[0x24]),
            ("KeyK", &[0x25]),
            ("KeyL", &[0x26]),
            ("Semicolon", &[0x27]),
            ("Quote", &[0x28]),
            ("ShiftLeft", &[0x2A]),
            ("Backslash", &[0x2B]),
            ("KeyZ", &[0x2C]),
            ("KeyX", &[0x2D]),
            ("KeyC", &[0x2E]),
            ("KeyV", &[0x2F]),
            ("KeyB", &[0x30]),
            ("KeyN", &[0x31]),
            ("KeyM", &[0x32]),
            ("Comma", &[0x33]),
            ("Period", &[0x34]),
            ("Slash", &[0x35]),
            ("ShiftRight", &[0x36]),
            ("NumpadMultiply", &[0x37]),
            ("AltLeft", &[0x38]),
            ("Space", &[0x39]),
            ("CapsLock", &[0x3A]),
            ("NumLock", &[0x45]),
            ("Numpad7", &[0x47]),
            ("Numpad8", &[0x48]),
            ("Numpad9", &[0x49]),
            ("NumpadSubtract", &[0x4A]),
            ("Numpad4", &[0x4B]),
            ("Numpad5", &[0x4C]),
            ("Numpad6", &[0x4D]),
            ("NumpadAdd", &[0x4E]),
            ("Numpad1", &[0x4F]),
            ("Numpad2", &[0x50]),
            ("Numpad3", &[0x51]),
            ("Numpad0", &[0x52]),
            ("NumpadDecimal", &[0x53]),
            ("IntlBackslash", &[0x56]),
            ("NumpadEqual", &[0x59]),
            ("IntlRo", &[0x73]),
            ("IntlYen", &[0x7D]),
            ("NumpadComma", &[0x7E]),
            ("KanaMode", &[0x70]),
            ("Convert", &[0x79]),
            ("NonConvert", &[0x7B]),
            ("NumpadEnter", &[0xE0, 0x1C]),
            ("ControlRight", &[0xE0, 0x1D]),
            ("NumpadDivide", &[0xE0, 0x35]),
            ("AltRight", &[0xE0, 0x38]),
            ("Home", &[0xE0, 0x47]),
            ("ArrowUp", &[0xE0, 0x48]),
            ("PageUp", &[0xE0, 0x49]),
            ("ArrowLeft", &[0xE0, 0x4B]),
            ("ArrowRight", &[0xE0, 0x4D]),
            ("End", &[0xE0, 0x4F]),
            ("ArrowDown", &[0xE0, 0x50]),
            ("PageDown", &[0xE0, 0x51]),
            ("Insert", &[0xE0, 0x52]),
            ("Delete", &[0xE0, 0x53]),
            ("MetaLeft", &[0xE0, 0x5B]),
            ("MetaRight", &[0xE0, 0x5C]),
            ("ContextMenu", &[0xE0, 0x5D]),
            ("AudioVolumeMute", &[0xE0, 0x20]),
            ("AudioVolumeDown", &[0xE0, 0x2E]),
            ("AudioVolumeUp", &[0xE0, 0x30]),
            ("MediaPlayPause", &[0xE0, 0x22]),
            ("MediaTrackNext", &[0xE0, 0x19]),
            ("MediaTrackPrevious", &[0xE0, 0x10]),
            ("Power", &[0xE0, 0x5E]),
            ("Sleep", &[0xE0, 0x5F]),
            ("WakeUp", &[0xE0, 0x63]),
        ];
        for (code, set1_make) in expect {
            let make = scancode(code).unwrap_or_else(|| panic!("{code} has no scan code"));
            assert_eq!(&set1(make), set1_make, "{code}");
        }
        // The 104 keys of a US keyboard plus IntlBackslash are all present.
        assert!(expect.len() > 105);
    }

    #[test]
    fn breaks_follow_the_makes() {
        assert_eq!(set2_break(scancode("KeyA").unwrap()), [0xF0, 0x1C]);
        assert_eq!(set2_break(scancode("ArrowUp").unwrap()), [0xE0, 0xF0, 0x75]);
        assert_eq!(
            set2_break(scancode("PrintScreen").unwrap()),
            [0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12]
        );
        assert!(!has_break(scancode("Pause").unwrap()));
        // The keyboard model agrees about which keys have a break sequence.
        for (code, make) in KEYS {
            assert_eq!(has_break(make), !set2_break(make).is_empty(), "{code}");
        }
    }

    #[test]
    fn no_code_is_listed_twice_and_makes_are_well_formed() {
        for (i, (code, make)) in KEYS.iter().enumerate() {
            assert!(!KEYS[..i].iter().any(|(c, _)| c == code), "{code} twice");
            assert!(!make.is_empty() && make.len() <= 8, "{code}");
            // Single codes: one byte, or E0 and one byte; only Print Screen and Pause are more.
            if !matches!(*code, "PrintScreen" | "Pause") {
                assert!(
                    make.len() == 1 || (make.len() == 2 && make[0] == 0xE0),
                    "{code}"
                );
                assert_ne!(*make.last().unwrap(), 0xF0, "{code}");
            }
        }
    }

    #[test]
    fn every_printable_ascii_character_has_a_stroke() {
        for b in 0x20u8..0x7F {
            let c = b as char;
            let s = stroke_for(c).unwrap_or_else(|| panic!("{c:?}"));
            assert!(scancode(s.key).is_some(), "{c:?} → {}", s.key);
            assert!(!s.ctrl, "{c:?}");
        }
        assert_eq!(stroke_for('a'), Some(Stroke::plain("KeyA")));
        assert_eq!(stroke_for('Z'), Some(Stroke::shifted("KeyZ")));
        assert_eq!(stroke_for('$'), Some(Stroke::shifted("Digit4")));
        assert_eq!(stroke_for('('), Some(Stroke::shifted("Digit9")));
        assert_eq!(stroke_for(')'), Some(Stroke::shifted("Digit0")));
        assert_eq!(stroke_for('*'), Some(Stroke::shifted("Digit8")));
        assert_eq!(stroke_for('7'), Some(Stroke::plain("Digit7")));
        assert_eq!(stroke_for('|'), Some(Stroke::shifted("Backslash")));
        assert_eq!(stroke_for('"'), Some(Stroke::shifted("Quote")));
        assert_eq!(stroke_for('\n'), Some(Stroke::plain("Enter")));
        assert_eq!(stroke_for('\x03'), Some(Stroke::ctrl("KeyC")));
        assert_eq!(stroke_for('\x1A'), Some(Stroke::ctrl("KeyZ")));
        assert_eq!(stroke_for('é'), None);
        assert_eq!(stroke_for('\0'), None);
    }

    #[test]
    fn a_shifted_stroke_presses_and_releases_in_order() {
        let ev = stroke_for('A').unwrap().events();
        assert_eq!(
            ev,
            vec![
                (&[0x12][..], true),
                (&[0x1C][..], true),
                (&[0x1C][..], false),
                (&[0x12][..], false),
            ]
        );
        let ctrl_c = stroke_for('\x03').unwrap().events();
        assert_eq!(ctrl_c.first(), Some(&(&[0x14][..], true)));
        assert_eq!(ctrl_c.last(), Some(&(&[0x14][..], false)));
        assert_eq!(stroke_for('a').unwrap().events().len(), 2);
    }
}
