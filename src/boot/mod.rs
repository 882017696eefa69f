//! Getting a guest started without firmware: the Linux x86 boot protocol ([`linux`]).
//! A BIOS loader will live here too.

pub mod linux;
