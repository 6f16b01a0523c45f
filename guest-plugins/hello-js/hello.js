// hello-js: the wasmplug reference greeter plugin, in JavaScript.
//
// This is the template for a JavaScript plugin: copy this directory, change
// NAME below, and edit the functions. componentize-js (SpiderMonkey) turns
// this ES module into a WebAssembly component for the world `greeter-plugin`
// of ../../wit/plugin.wit; see build.sh.
//
// How WIT maps to JavaScript here (componentize-js / jco conventions):
//   - an exported interface is an exported object named after it
//     (`lifecycle`, `greeter`), with one method per WIT function;
//   - an imported interface is a module: 'wasmplug:plugin/host@1.0.0';
//   - record -> plain object, enum -> string ('info'), u32 -> number;
//   - `result<T, E>`: return a T for ok; throw a *non-Error* value (here a
//     string) for err(value);
//   - throwing an `Error` traps: the host discards this instance.
//
// Module-level variables live in this instance's own memory: every instance
// starts from a fresh copy and never sees another instance's state.

import { log } from 'wasmplug:plugin/host@1.0.0';

const NAME = 'hello-js';
const VERSION = '1.0.0';
const U32_MAX = 4294967295;

let initialised = false; // set by init()
let counter = 0; // this instance's counter

// Trap if the host skipped init() for this instance (an Error always traps).
function requireInit() {
  if (!initialised) throw new Error('greeter called before init');
}

export const lifecycle = {
  // Must not depend on init(): the host calls it first, to name the plugin.
  identity() {
    return { name: NAME, version: VERSION };
  },

  // Called once per instance, before anything else. Returning normally is
  // ok(); `throw 'why'` would refuse the instance.
  init() {
    initialised = true;
    log('info', `init ${NAME}@${VERSION}`);
  },
};

export const greeter = {
  welcome(name) {
    requireInit();
    return `Welcome, ${name}!`;
  },

  hello(who) {
    requireInit();
    return `Hello, ${who.name}!`;
  },

  count() {
    requireInit();
    counter += 1;
    return counter;
  },

  birthday(who) {
    requireInit();
    // A thrown string is the plugin's own err(...) answer, not a crash.
    if (who.name === '') throw 'a user needs a name';
    return { name: who.name, age: Math.min(who.age + 1, U32_MAX) };
  },
};
