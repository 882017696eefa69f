// xterm.js for the npm package: the front-end imports ./vendor/xterm/xterm.mjs (scripts/site.sh
// copies xterm.js there for the static site); in node_modules, @xterm/xterm is a peer
// dependency, so npm puts it beside this package: node_modules/@xterm/xterm.
export * from "../../../@xterm/xterm/lib/xterm.mjs";
