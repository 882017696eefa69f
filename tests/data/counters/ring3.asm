; A guest with known event counts, for tests/counters.rs.
;
; Built with: nasm -f bin -o ring3.bin ring3.asm   (the test loads ring3.bin at 0x1000 and
; starts the CPU there in real mode).
;
; Ring 0 sets up flat segments, a TSS with an I/O bitmap that lets ring 3 use port 0x80, an
; IDT, and paging with the five pages at 0x100000-0x104FFF not present, then IRETs to ring 3
; with IOPL 0 and IF clear. Ring 3 runs each of the sensitive unprivileged instructions of
; Robin and Irvine once, writes port 0x80 seven times, writes to the five absent pages (five
; page faults, each handled in ring 0 by marking the page present), and leaves through
; INT 0x30, whose handler halts. The test resets the counters when the CPU first reaches CPL 3
; and reads them when it halts.

bits 16
org 0x1000

CODE0   equ 0x08
DATA0   equ 0x10
CODE3   equ 0x18 | 3
DATA3   equ 0x20 | 3
TSS_SEL equ 0x28

PAGE_DIR   equ 0x20000
PAGE_TABLE equ 0x21000
ABSENT     equ 0x100000        ; first of the five pages that start not present
ABSENT_N   equ 5
PORT       equ 0x80            ; the POST code port: ring 3 may use it through the I/O bitmap
OUTS_N     equ 7

start:
    cli
    xor ax, ax
    mov ds, ax
    lgdt [gdt_ptr]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    jmp dword CODE0:protected

bits 32
protected:
    mov ax, DATA0
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x90000

    ; Page table: 0-4 MiB identity, present, writable, user; the five test pages absent.
    mov edi, PAGE_TABLE
    mov eax, 0x7                ; P | RW | US
    mov ecx, 1024
.fill:
    mov [edi], eax
    add eax, 0x1000
    add edi, 4
    loop .fill
    mov edi, PAGE_TABLE + (ABSENT >> 12) * 4
    mov ecx, ABSENT_N
.absent:
    and dword [edi], ~1
    add edi, 4
    loop .absent
    mov dword [PAGE_DIR], PAGE_TABLE | 0x7
    mov eax, PAGE_DIR
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax

    ; The TSS's descriptor base, then TR.
    mov eax, tss
    mov [gdt_tss + 2], ax
    shr eax, 16
    mov [gdt_tss + 4], al
    mov [gdt_tss + 7], ah
    mov ax, TSS_SEL
    ltr ax

    ; IDT: #PF (14) and INT 0x30 (callable from ring 3); every other vector halts.
    mov edi, idt
    mov ecx, 0x31
.idt:
    mov eax, unexpected
    mov edx, 0x8E00             ; present 32-bit interrupt gate, DPL 0
    call set_gate
    add edi, 8
    loop .idt
    mov edi, idt + 14 * 8
    mov eax, page_fault
    mov edx, 0x8E00
    call set_gate
    mov edi, idt + 0x30 * 8
    mov eax, leave_ring3
    mov edx, 0xEE00             ; DPL 3: INT 0x30 is allowed at CPL 3
    call set_gate
    lidt [idt_ptr]

    ; To ring 3: SS:ESP, EFLAGS (IOPL 0, IF clear), CS:EIP.
    push dword DATA3
    push dword 0x80000
    push dword 0x2
    push dword CODE3
    push dword user
    iretd

; EAX = handler, EDX = type and attributes, EDI = gate.
set_gate:
    mov [edi], ax
    mov word [edi + 2], CODE0
    mov [edi + 4], dx
    shr eax, 16
    mov [edi + 6], ax
    ret

page_fault:
    push eax
    mov eax, cr2
    shr eax, 12
    or dword [PAGE_TABLE + eax * 4], 1
    pop eax
    add esp, 4                  ; the error code
    iretd

leave_ring3:
    cli
    hlt
    jmp leave_ring3

unexpected:
    mov al, 0xEE
    out 0xE9, al                ; the debug console: the test fails on any output
    cli
    hlt
    jmp unexpected

; ---- Ring 3 ----
user:
    mov ax, DATA3
    mov ds, ax                  ; MOV Sreg, r/m
    mov es, ax
    mov bx, ax
    pushfd                      ; PUSHF
    pop eax
    or eax, 0x200               ; ask for IF
    push eax
    popfd                       ; POPF: IF stays clear, without a trap
    lar eax, bx                 ; LAR
    lsl eax, bx                 ; LSL
    verr bx                     ; VERR
    verw bx                     ; VERW
    push ds                     ; PUSH Sreg
    pop ds                      ; POP Sreg
    mov ax, ds                  ; MOV r/m, Sreg
    sgdt [scratch]              ; SGDT
    sidt [scratch]              ; SIDT
    sldt ax                     ; SLDT
    str ax                      ; STR
    smsw ax                     ; SMSW
    call CODE3:far_function     ; CALL far (and RET far)
    jmp CODE3:after_jump        ; JMP far
after_jump:
    pushfd                      ; IRET to the same ring
    push dword CODE3
    push dword after_iret
    iretd
after_iret:
    mov ecx, OUTS_N
.out:
    mov al, cl
    out PORT, al                ; OUT, allowed by the I/O bitmap
    loop .out
    mov edi, ABSENT
    mov ecx, ABSENT_N
.touch:
    mov dword [edi], 0x1234     ; a write to an absent page: #PF, then again after it
    add edi, 0x1000
    loop .touch
    int 0x30                    ; INT n: leave

far_function:
    retf

; ---- Tables ----
align 8
gdt:
    dq 0
    dq 0x00CF9A000000FFFF       ; ring 0 code, flat
    dq 0x00CF92000000FFFF       ; ring 0 data, flat
    dq 0x00CFFA000000FFFF       ; ring 3 code, flat
    dq 0x00CFF2000000FFFF       ; ring 3 data, flat
gdt_tss:
    dw tss_end - tss - 1        ; limit: the TSS and its I/O bitmap
    dw 0                        ; base 0-15 (filled in)
    db 0                        ; base 16-23
    db 0x89                     ; present 32-bit available TSS
    db 0
    db 0                        ; base 24-31
gdt_end:

gdt_ptr:
    dw gdt_end - gdt - 1
    dd gdt

idt_ptr:
    dw 0x31 * 8 - 1
    dd idt

align 4
tss:
    dd 0                        ; back link
    dd 0x90000                  ; ESP0
    dd DATA0                    ; SS0
    times 22 dd 0
    dw 0                        ; T
    dw iomap - tss              ; I/O map base
iomap:
    times PORT / 8 db 0xFF      ; ports 0x00-0x7F: refused
    db 0xFE                     ; port 0x80 allowed, 0x81-0x87 refused
    times 15 db 0xFF            ; up to 0xFF
    db 0xFF                     ; the terminating byte
tss_end:

scratch:
    times 8 db 0

align 8
idt:
    times 0x31 * 8 db 0
