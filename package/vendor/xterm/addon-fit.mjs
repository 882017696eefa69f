// @xterm/addon-fit, beside this package in node_modules (see xterm.mjs).
export * from "../../../@xterm/addon-fit/lib/addon-fit.mjs";
