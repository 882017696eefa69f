; A virtual-8086 monitor (EMM386/DOS-extender style). The 32-bit monitor enters V86 mode with
; IRET (VM = 1, IOPL = 0). 8086 code runs CLI, PUSHF, STI, POPF, INT 21h, IN and OUT: each traps
; to the monitor's #GP handler, which logs the faulting CS:IP and opcode and emulates the
; instruction (virtual IF, PUSHF/POPF on the V86 stack, INT 21h returning AX, IN returning a
; value, OUT recording one). HLT asks the monitor to raise IOPL to 3: CLI/STI/PUSHF/POPF then run
; directly, INT 30h goes through the IDT to ring 0 with a V86 frame (checked field by field), and
; IN still faults (V86 I/O uses the bitmap, and this TSS has none). A second HLT ends the test.

%include "common.inc"
org LOAD_ADDR

SEL_TSS     equ 0x28
KSTACK      equ 0x9E000
V86_SS      equ 0x6000
V86_SP      equ 0x1000
V86_DS      equ RESULTS >> 4        ; V86 code addresses results as DS:(slot - RESULTS)
V86_ES      equ 0x1000
V86_FS      equ 0x2000
V86_GS      equ 0x3000
EFLAGS_VM   equ 0x20000
EFLAGS_IF   equ 0x200
IOPL3       equ 0x3000

%define V(slot) ((slot) - RESULTS)

r_gp_count      equ RESULTS + 0x04
r_v_pushf       equ RESULTS + 0x08  ; what the emulated PUSHF stored (virtual IF = 0)
r_m_popf        equ RESULTS + 0x0C  ; what the monitor popped for POPF
r_v_int_ax      equ RESULTS + 0x10
r_v_in_al       equ RESULTS + 0x14
r_m_out_al      equ RESULTS + 0x18
r_m_vif         equ RESULTS + 0x1C  ; virtual IF at the first HLT
r_m_int_vec     equ RESULTS + 0x20
r_p2_cli        equ RESULTS + 0x24  ; FLAGS after a direct CLI
r_p2_sti        equ RESULTS + 0x28
r_p2_popf       equ RESULTS + 0x2C
r_i_eip         equ RESULTS + 0x30  ; the INT 30h frame at ring 0
r_i_cs          equ RESULTS + 0x34
r_i_eflags      equ RESULTS + 0x38
r_i_esp         equ RESULTS + 0x3C
r_i_ss          equ RESULTS + 0x40
r_i_es          equ RESULTS + 0x44
r_i_ds          equ RESULTS + 0x48
r_i_fs          equ RESULTS + 0x4C
r_i_gs          equ RESULTS + 0x50
r_i_handler_esp equ RESULTS + 0x54
r_i_cpl         equ RESULTS + 0x58
r_i_sregs       equ RESULTS + 0x5C  ; DS, ES, FS, GS at handler entry, a byte each (all null)
r_v_ret_ax      equ RESULTS + 0x60
r_v_ret_es      equ RESULTS + 0x64
r_v_ret_sp      equ RESULTS + 0x68
r_unexpected    equ RESULTS + 0x6C
; #GP log: (linear CS:IP, opcode, error code) × 10.
r_gp0_lin       equ RESULTS + 0x80
r_gp0_op        equ RESULTS + 0x84
r_gp0_err       equ RESULTS + 0x88
r_gp1_lin       equ RESULTS + 0x8C
r_gp1_op        equ RESULTS + 0x90
r_gp2_lin       equ RESULTS + 0x98
r_gp2_op        equ RESULTS + 0x9C
r_gp3_lin       equ RESULTS + 0xA4
r_gp3_op        equ RESULTS + 0xA8
r_gp4_lin       equ RESULTS + 0xB0
r_gp4_op        equ RESULTS + 0xB4
r_gp5_lin       equ RESULTS + 0xBC
r_gp5_op        equ RESULTS + 0xC0
r_gp6_lin       equ RESULTS + 0xC8
r_gp6_op        equ RESULTS + 0xCC
r_gp7_lin       equ RESULTS + 0xD4
r_gp7_op        equ RESULTS + 0xD8
r_gp8_lin       equ RESULTS + 0xE0
r_gp8_op        equ RESULTS + 0xE4
r_gp8_err       equ RESULTS + 0xE8
r_gp9_lin       equ RESULTS + 0xEC
r_gp9_op        equ RESULTS + 0xF0
r_gp_err_or     equ RESULTS + 0xF8  ; OR of all error codes
GP_ENTRY        equ 12

; #GP frame offsets after PUSHAD.
F_EAX    equ 28
F_ERR    equ 32
F_EIP    equ 36
F_CS     equ 40
F_EFLAGS equ 44
F_ESP    equ 48
F_SS     equ 52

start:
    ENTER_PM32 pm_main, 0x9F000

pm_main:
    SET_GATE 13, gp_handler, GATE_INT32, idt
    SET_GATE 0x30, int30_handler, GATE_INT32 | 0x60, idt     ; DPL 3
    lidt [idt_desc]
    mov dword [tss + 4], KSTACK
    mov word [tss + 8], SEL_DATA0
    mov word [tss + 102], 104           ; no I/O bitmap
    mov ax, SEL_TSS
    ltr ax
    mov byte [vif], 1
    ; Enter V86 mode: IRET with VM set pops SS:ESP and ES/DS/FS/GS too.
    push dword V86_GS
    push dword V86_FS
    push dword V86_DS
    push dword V86_ES
    push dword V86_SS
    push dword V86_SP
    push dword EFLAGS_VM | EFLAGS_IF | 2
    push dword 0
    push dword v86_code
    iretd

; ---- 8086 code (CS = 0, DS = RESULTS >> 4) ----
    bits 16
v86_code:
v_cli:
    cli                                 ; IOPL 0: #GP, virtual IF = 0
v_pushf:
    pushf                               ; #GP, the monitor pushes FLAGS with the virtual IF
    pop bx
    mov [V(r_v_pushf)], bx
v_sti:
    sti
    push word 0x0201
v_popf:
    popf                                ; #GP, the monitor pops it
    xor ax, ax
v_int:
    int 0x21                            ; #GP, the monitor "emulates" it: AX = 4321h
    mov [V(r_v_int_ax)], ax
v_in:
    in al, 0x60                         ; #GP, the monitor returns 5Ah
    mov [V(r_v_in_al)], al
    mov al, 0x77
v_out:
    out 0x61, al                        ; #GP, the monitor records AL
v_hlt1:
    hlt                                 ; #GP: the monitor raises IOPL to 3
    ; IOPL 3: these run without faulting.
    cli
    pushf
    pop ax
    mov [V(r_p2_cli)], ax
    sti
    pushf
    pop ax
    mov [V(r_p2_sti)], ax
    push word 0x0AD5                    ; OF SF ZF AF PF CF IF, IOPL 0 (ignored in V86)
    popf
    pushf
    pop ax
    mov [V(r_p2_popf)], ax
    mov ax, 0x1234
    int 0x30                            ; through the IDT to ring 0
v_after_int:
    mov [V(r_v_ret_ax)], ax
    mov [V(r_v_ret_es)], es
    mov [V(r_v_ret_sp)], sp
v_in2:
    in al, 0x60                         ; still #GP: no I/O bitmap
v_hlt2:
    hlt                                 ; #GP: the monitor finishes
    bits 32

; ---- the monitor ----
gp_handler:
    pushad
    mov ax, SEL_DATA0                   ; DS/ES/FS/GS were nulled on the way out of V86
    mov ds, ax
    mov es, ax
    movzx esi, word [esp + F_CS]
    shl esi, 4
    movzx eax, word [esp + F_EIP]
    add esi, eax                        ; linear CS:IP
    mov ebx, [r_gp_count]
    imul ebx, ebx, GP_ENTRY
    mov [r_gp0_lin + ebx], esi
    movzx eax, byte [esi]
    mov [r_gp0_op + ebx], eax
    mov ecx, [esp + F_ERR]
    mov [r_gp0_err + ebx], ecx
    or [r_gp_err_or], ecx
    inc dword [r_gp_count]
    mov ecx, 1                          ; instruction length
    cmp al, 0xFA
    je .cli
    cmp al, 0xFB
    je .sti
    cmp al, 0x9C
    je .pushf
    cmp al, 0x9D
    je .popf
    cmp al, 0xCD
    je .int
    cmp al, 0xE4
    je .in
    cmp al, 0xE6
    je .out
    cmp al, 0xF4
    je .hlt
    mov dword [r_unexpected], 0x0D
    hlt
.cli:
    mov byte [vif], 0
    jmp .skip
.sti:
    mov byte [vif], 1
    jmp .skip
.pushf:
    call v86_stack                      ; EDI = linear SS:SP
    sub edi, 2
    sub word [esp + F_ESP], 2
    mov eax, [esp + F_EFLAGS]
    and eax, ~EFLAGS_IF & 0xFFFF
    movzx edx, byte [vif]
    shl edx, 9
    or eax, edx
    mov [edi], ax
    jmp .skip
.popf:
    call v86_stack
    movzx eax, word [edi]
    mov [r_m_popf], eax
    add word [esp + F_ESP], 2
    shr eax, 9
    and al, 1
    mov [vif], al
    jmp .skip
.int:
    movzx eax, byte [esi + 1]
    mov [r_m_int_vec], eax
    mov word [esp + F_EAX], 0x4321
    mov ecx, 2
    jmp .skip
.in:
    mov byte [esp + F_EAX], 0x5A
    mov ecx, 2
    jmp .skip
.out:
    movzx eax, byte [esp + F_EAX]
    mov [r_m_out_al], eax
    mov ecx, 2
    jmp .skip
.hlt:
    cmp byte [phase], 0
    jne .finish
    movzx eax, byte [vif]
    mov [r_m_vif], eax
    mov byte [phase], 1
    or dword [esp + F_EFLAGS], IOPL3
.skip:
    add [esp + F_EIP], cx
    popad
    add esp, 4
    iretd
.finish:
    FINISH

; EDI = linear address of the V86 SS:SP in the #GP frame (called with one return address pushed).
v86_stack:
    movzx edi, word [esp + 4 + F_SS]
    shl edi, 4
    movzx eax, word [esp + 4 + F_ESP]
    add edi, eax
    ret

int30_handler:
    ; Data segment registers are null here: record them before loading one.
    mov [ss:r_i_handler_esp], esp
    mov [ss:r_i_sregs], ds
    mov [ss:r_i_sregs + 1], es
    mov [ss:r_i_sregs + 2], fs
    mov [ss:r_i_sregs + 3], gs
    push eax
    mov ax, SEL_DATA0
    mov ds, ax
    mov eax, [esp + 4]
    mov [r_i_eip], eax
    mov eax, [esp + 8]
    mov [r_i_cs], eax
    mov eax, [esp + 12]
    mov [r_i_eflags], eax
    mov eax, [esp + 16]
    mov [r_i_esp], eax
    mov eax, [esp + 20]
    mov [r_i_ss], eax
    mov eax, [esp + 24]
    mov [r_i_es], eax
    mov eax, [esp + 28]
    mov [r_i_ds], eax
    mov eax, [esp + 32]
    mov [r_i_fs], eax
    mov eax, [esp + 36]
    mov [r_i_gs], eax
    mov ax, cs
    and eax, 3
    mov [r_i_cpl], eax
    pop eax
    mov ax, 0x7777                      ; the return value the V86 code sees
    iretd

; ---- data ----
vif:
    db 0
phase:
    db 0
align 8
gdt:
    STD_GDT
    SYS_DESC ABS(tss), 103, 0x89
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt
idt_desc:
    dw 256 * 8 - 1
    dd idt
align 8
tss:
    times 104 db 0
align 8
idt:
    times 256 * 8 db 0
