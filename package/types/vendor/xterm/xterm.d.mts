// vendor/xterm/xterm.mjs is xterm.js: copied there by scripts/site.sh (the static site), or a
// module that forwards to the @xterm/xterm peer dependency (the npm package). Its types are
// @xterm/xterm's own.
export * from "@xterm/xterm";
