; Self-modifying code, in real mode and in paged protected mode: a store into a later
; instruction of the same straight-line block, into the very next instruction, into a routine
; between two calls, into an instruction that straddles a page boundary (in either page), a
; loop that bumps its own immediate, a store through a second (alias) linear mapping of a code
; page, and remapping a code page's PTE (+ INVLPG) to different code.

%include "common.inc"
org LOAD_ADDR

PAGE_DIR    equ 0x20000
PT0         equ 0x21000
PT1         equ 0x22000
ALIAS       equ 0x400000            ; maps the physical page 0xA000

r_rm_same   equ RESULTS + 0x04
r_rm_next   equ RESULTS + 0x08
r_rm_call1  equ RESULTS + 0x0C
r_rm_call2  equ RESULTS + 0x10
r_rm_x1_eax equ RESULTS + 0x14
r_rm_x1_bl  equ RESULTS + 0x18
r_rm_x2_eax equ RESULTS + 0x1C
r_rm_x2_bl  equ RESULTS + 0x20
r_rm_x3_eax equ RESULTS + 0x24
r_pm_same   equ RESULTS + 0x28
r_pm_next   equ RESULTS + 0x2C
r_pm_call1  equ RESULTS + 0x30
r_pm_call2  equ RESULTS + 0x34
r_pm_x1_eax equ RESULTS + 0x38
r_pm_x1_bl  equ RESULTS + 0x3C
r_pm_x2_eax equ RESULTS + 0x40
r_pm_x2_bl  equ RESULTS + 0x44
r_pm_x3_eax equ RESULTS + 0x48
r_pm_loop   equ RESULTS + 0x4C
r_pm_alias  equ RESULTS + 0x50
r_pm_remap1 equ RESULTS + 0x54
r_pm_remap2 equ RESULTS + 0x58

; The cross-page routines: `mov eax, imm32` starts 3 bytes before a page boundary, `mov bl,
; imm8` follows on the next page.
CROSS16     equ 0x8FF8
CROSS32     equ 0x9FF8
X_MOV       equ 5                   ; offset of the MOV EAX in both routines
REMAP_PAGE  equ 0xB000
OTHER_PAGE  equ 0xC000

    bits 16
start:
    cli
    xor ax, ax
    mov ds, ax
    mov ss, ax
    mov sp, 0x7000

    ; ---- real mode ----
    mov byte [rm_same + 1], 0x42        ; same block, a few instructions ahead
    nop
    nop
rm_same:
    mov al, 0
    mov [r_rm_same], al
    mov byte [rm_next + 1], 0x43        ; the very next instruction
rm_next:
    mov al, 0
    mov [r_rm_next], al
    call func
    mov [r_rm_call1], al
    mov byte [func + 1], 0x22
    call func
    mov [r_rm_call2], al

    call CROSS16
    mov [r_rm_x1_eax], eax
    mov [r_rm_x1_bl], bl
    mov byte [CROSS16 + X_MOV + 4], 0x33    ; imm32 byte 2: second page
    mov byte [cross16_bl + 1], 0x44         ; second page
    call CROSS16
    mov [r_rm_x2_eax], eax
    mov [r_rm_x2_bl], bl
    mov byte [CROSS16 + X_MOV + 2], 0x55    ; imm32 byte 0: first page
    call CROSS16
    mov [r_rm_x3_eax], eax

    ENTER_PM32 pm_main, 0x9F000

pm_main:
    ; Identity-map 0..4 MiB; 4..8 MiB: PT1, whose first entry aliases the page 0xA000.
    mov edi, PT0
    mov eax, 3
    mov ecx, 1024
.fill:
    stosd
    add eax, 0x1000
    loop .fill
    mov edi, PT1
    xor eax, eax
    mov ecx, 1024
    rep stosd
    mov dword [PT1], 0xA000 | 3
    mov edi, PAGE_DIR
    mov ecx, 1024
    rep stosd
    mov dword [PAGE_DIR], PT0 | 3
    mov dword [PAGE_DIR + 4], PT1 | 3
    mov eax, PAGE_DIR
    mov cr3, eax
    mov eax, cr0
    or eax, 0x80000000
    mov cr0, eax

    mov byte [pm_same + 1], 0x52
    nop
    nop
pm_same:
    mov al, 0
    mov [r_pm_same], al
    mov byte [pm_next + 1], 0x53
pm_next:
    mov al, 0
    mov [r_pm_next], al
    call func
    mov [r_pm_call1], al
    mov byte [func + 1], 0x33
    call func
    mov [r_pm_call2], al

    call CROSS32
    mov [r_pm_x1_eax], eax
    mov [r_pm_x1_bl], bl
    mov byte [CROSS32 + X_MOV + 3], 0x33    ; imm32 byte 2: second page
    mov byte [cross32_bl + 1], 0x44
    call CROSS32
    mov [r_pm_x2_eax], eax
    mov [r_pm_x2_bl], bl
    mov byte [CROSS32 + X_MOV + 1], 0x55    ; imm32 byte 0: first page
    call CROSS32
    mov [r_pm_x3_eax], eax

    ; A loop that bumps its own ADD immediate: 1 + 2 + 3 + 4 + 5.
    mov ecx, 5
    xor edx, edx
pm_loop:
    add edx, strict byte 1
    inc byte [pm_loop + 2]
    dec ecx
    jnz pm_loop
    mov [r_pm_loop], edx

    ; A store through the alias mapping of the page 0xA000 changes the MOV BL immediate.
    mov byte [ALIAS + (cross32_bl - 0xA000) + 1], 0x66
    call CROSS32
    mov [r_pm_alias], bl

    ; Remap the code page at REMAP_PAGE to OTHER_PAGE.
    call REMAP_PAGE
    mov [r_pm_remap1], eax
    mov dword [PT0 + (REMAP_PAGE >> 12) * 4], OTHER_PAGE | 3
    invlpg [REMAP_PAGE]
    call REMAP_PAGE
    mov [r_pm_remap2], eax
    FINISH

func:
    mov al, 0x11
    ret

align 8
gdt:
    STD_GDT
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt

; ---- code at fixed addresses ----
    bits 16
    times (CROSS16 - LOAD_ADDR) - ($ - $$) db 0xCC
    times X_MOV nop
    mov eax, 0x11111111                 ; 66 B8 imm32: 0x8FFD..0x9002
cross16_bl:
    mov bl, 0x22
    ret
    bits 32
    times (CROSS32 - LOAD_ADDR) - ($ - $$) db 0xCC
    times X_MOV nop
    mov eax, 0x11111111                 ; B8 imm32: 0x9FFD..0xA001
cross32_bl:
    mov bl, 0x22
    ret
    times (REMAP_PAGE - LOAD_ADDR) - ($ - $$) db 0xCC
    mov eax, 0xAAAA
    ret
    times (OTHER_PAGE - LOAD_ADDR) - ($ - $$) db 0xCC
    mov eax, 0xBBBB
    ret
