// vendor/xterm/addon-fit.mjs is @xterm/addon-fit (see xterm.d.mts beside this file).
export * from "@xterm/addon-fit";
