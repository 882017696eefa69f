; Debug facilities as a kernel debugger uses them (32-bit protected mode, CPL 0):
; a DR0 execute breakpoint (#DB fault before the instruction, DR6.B0, resumed with RF), a DR1
; dword write breakpoint (trap after the write, DR6.B1), TF single-stepping over three
; instructions (three traps with DR6.BS), INT3 (#BP with EIP after the INT3), and DR7.GD
; (#DB fault on the next MOV DRx with DR6.BD, GD cleared for the handler).

%include "common.inc"
org LOAD_ADDR

EFLAGS_TF   equ 0x100
EFLAGS_RF   equ 0x10000

r_db_count      equ RESULTS + 0x04
r_exec_ran      equ RESULTS + 0x08
r_watch_in_db   equ RESULTS + 0x0C  ; the watched dword as the #DB handler saw it
r_bp_eip        equ RESULTS + 0x10
r_bp_count      equ RESULTS + 0x14
r_gd_eax        equ RESULTS + 0x18
r_read_hits     equ RESULTS + 0x1C  ; #DB count after only reading the watched dword
r_steps_done    equ RESULTS + 0x20
r_dr6_clean     equ RESULTS + 0x24  ; DR6 after the handler wrote 0
r_dr7_final     equ RESULTS + 0x28
; #DB log: (EIP, DR6, DR7) × 6.
r_db0_eip       equ RESULTS + 0x40
r_db0_dr6       equ RESULTS + 0x44
r_db0_dr7       equ RESULTS + 0x48
r_db1_eip       equ RESULTS + 0x4C
r_db1_dr6       equ RESULTS + 0x50
r_db2_eip       equ RESULTS + 0x58
r_db2_dr6       equ RESULTS + 0x5C
r_db3_eip       equ RESULTS + 0x64
r_db3_dr6       equ RESULTS + 0x68
r_db4_eip       equ RESULTS + 0x70
r_db4_dr6       equ RESULTS + 0x74
r_db5_eip       equ RESULTS + 0x7C
r_db5_dr6       equ RESULTS + 0x80
r_db5_dr7       equ RESULTS + 0x84
DB_ENTRY        equ 12

start:
    ENTER_PM32 pm_main, 0x9F000

pm_main:
    SET_GATE 1, db_handler, GATE_INT32, idt
    SET_GATE 3, bp_handler, GATE_INT32, idt
    lidt [idt_desc]

    ; ---- DR0: execute breakpoint ----
    mov eax, bp_exec
    mov dr0, eax
    mov eax, 1                          ; L0, RW0 = execute, LEN0 = 1 byte
    mov dr7, eax
    nop
bp_exec:
    inc dword [r_exec_ran]              ; #DB before it; runs once after the IRET with RF
    xor eax, eax
    mov dr7, eax

    ; ---- DR1: dword write breakpoint ----
    mov eax, watch
    mov dr1, eax
    mov eax, (1 << 2) | (1 << 20) | (3 << 22)   ; L1, RW1 = write, LEN1 = 4 bytes
    mov dr7, eax
    mov eax, [watch]                    ; a read does not hit a write breakpoint
    mov eax, [r_db_count]
    mov [r_read_hits], eax
w_instr:
    mov dword [watch], 0x1234           ; #DB trap after the write
w_after:
    nop
    xor eax, eax
    mov dr7, eax

    ; ---- TF: three single-step traps ----
    mov dword [steps_left], 3
    pushfd
    or dword [esp], EFLAGS_TF
    popfd                               ; TF takes effect after the next instruction
s1:
    inc dword [r_steps_done]
s2:
    inc dword [r_steps_done]
s3:
    inc dword [r_steps_done]            ; the handler clears TF after this one's trap
s4:
    inc dword [r_steps_done]

    ; ---- INT3 ----
    int3
bp_after:

    ; ---- DR7.GD: the next MOV DRx faults ----
    mov eax, 0x2000                     ; GD
    mov dr7, eax
gd_instr:
    mov eax, dr0                        ; #DB (BD); GD is clear in the handler, so it reruns
    mov [r_gd_eax], eax
    mov eax, dr7
    mov [r_dr7_final], eax
    FINISH

; ---- handlers ----
db_handler:
    push eax
    push ebx
    mov ebx, [r_db_count]
    imul ebx, ebx, DB_ENTRY
    mov eax, [esp + 8]
    mov [r_db0_eip + ebx], eax
    mov eax, dr6
    mov [r_db0_dr6 + ebx], eax
    mov eax, dr7
    mov [r_db0_dr7 + ebx], eax
    mov eax, [watch]
    mov [r_watch_in_db], eax
    inc dword [r_db_count]
    xor eax, eax
    mov dr6, eax                        ; DR6 is sticky: software clears it
    mov eax, dr6
    mov [r_dr6_clean], eax
    ; Resume with RF so an instruction breakpoint does not fire again.
    or dword [esp + 16], EFLAGS_RF
    ; Single-stepping: stop after the requested number of traps.
    mov eax, [esp + 16]
    test eax, EFLAGS_TF
    jz .out
    dec dword [steps_left]
    jnz .out
    and dword [esp + 16], ~EFLAGS_TF
.out:
    pop ebx
    pop eax
    iretd

bp_handler:
    push eax
    mov eax, [esp + 4]
    mov [r_bp_eip], eax
    inc dword [r_bp_count]
    pop eax
    iretd

; ---- data ----
align 4
watch:
    dd 0
steps_left:
    dd 0
align 8
gdt:
    STD_GDT
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd idt
align 8
idt:
    times 256 * 8 db 0
