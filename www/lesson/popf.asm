; popf: a 32-bit Linux program of 141 bytes for www/virtualization.html. It runs, 1000 times,
; PUSHFD; clear IF in the saved flags; POPFD. At CPL 3 with IOPL 0, POPF may not change IF: the
; CPU leaves IF set and raises no exception, so a trap-and-emulate monitor never learns that the
; guest asked to disable interrupts (Robin and Irvine's point). Then it exits with status 0.
;
; Built with: nasm -f bin -o popf popf.asm (the ELF header is written out below).
bits 32
org 0x08048000
ehdr:
    db 0x7F, "ELF", 1, 1, 1, 0      ; 32-bit, little-endian, version 1, System V
    times 8 db 0
    dw 2                            ; an executable
    dw 3                            ; for the i386
    dd 1                            ; ELF version 1
    dd start                        ; entry point
    dd phdr - $$                    ; program headers
    dd 0                            ; no section headers
    dd 0                            ; flags
    dw ehdr_size                    ; this header's size
    dw phdr_size                    ; one program header's size
    dw 2                            ; two program headers
    dw 0, 0, 0                      ; no sections
ehdr_size equ $ - ehdr
phdr:
    dd 1                            ; a loadable segment:
    dd 0                            ; the whole file
    dd $$                           ; at 0x08048000
    dd $$
    dd file_size
    dd file_size
    dd 5                            ; readable, executable
    dd 0x1000
phdr_size equ $ - phdr
    dd 0x6474E551                   ; PT_GNU_STACK: the stack is not executable
    times 5 dd 0
    dd 6                            ; readable, writable
    dd 16
start:
    mov ecx, 1000
again:
    pushfd
    and dword [esp], ~0x200         ; IF = 0 in the flags POPFD loads
    popfd                           ; silently keeps IF = 1 at CPL 3
    loop again
    mov eax, 1                      ; exit(0)
    xor ebx, ebx
    int 0x80
file_size equ $ - $$
