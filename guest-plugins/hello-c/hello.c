// hello-c: the reference greeter plugin (world `greeter-plugin` of
// wit/plugin.wit) in C. Behaves like the Rust `hello` plugin at 1.0.0.
//
// Built with -DWIT_1_1 (`WIT_VERSION=1.1 ./build.sh`) it targets world 1.1.0
// (wit/v1.1/plugin.wit) instead and is hello-c@1.1.0: it adds `farewell`,
// and `welcome` uses the embedder's `greeting` setting (the 1.1 `config`
// import) when there is one. Everything else is as in 1.0.0.
//
// Copy this file to start a C plugin. `build.sh` generates the bindings
// (`greeter_plugin.h/.c`) with `wit-bindgen c`; you implement the
// `exports_*` functions declared there.
//
// Ownership rules of the wit-bindgen C ABI (see the generated header):
// - Arguments (strings, records holding strings) belong to the callee:
//   free them with the generated `*_free` helpers, or hand them on in the
//   return value.
// - Returned strings must be heap memory (malloc / `greeter_plugin_string_dup`):
//   the generated post-return functions `free()` them after the host has
//   copied them. Never return a string literal (except an empty string).
// - Strings passed to imports (`wasmplug_plugin_host_log`) are only borrowed:
//   a literal via `greeter_plugin_string_set` is fine.
// - Strings an import returns (1.1's `wasmplug_plugin_config_get`, whose
//   option<string> is its bool result plus `*ret`) belong to the caller:
//   free them (`greeter_plugin_string_free`) when done.

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "greeter_plugin.h"

#define NAME "hello-c"
#ifdef WIT_1_1
#define VERSION "1.1.0"
#else
#define VERSION "1.0.0"
#endif

// Per instance: every instance has its own linear memory, so its own statics.
static bool initialised = false;
static uint32_t counter = 0;

// Trap if the host skipped `init` for this instance.
static void require_init(void) {
  if (!initialised) __builtin_trap();
}

// A new heap string: prefix + s + suffix (byte-wise, so any UTF-8 works).
static void concat3(greeter_plugin_string_t *ret, const char *prefix,
                    const greeter_plugin_string_t *s, const char *suffix) {
  size_t p = strlen(prefix), n = s->len, q = strlen(suffix);
  uint8_t *buf = malloc(p + n + q);
  if (!buf) abort();
  memcpy(buf, prefix, p);
  memcpy(buf + p, s->ptr, n);
  memcpy(buf + p + n, suffix, q);
  ret->ptr = buf;
  ret->len = p + n + q;
}

#ifdef WIT_1_1
// A new heap string: g + ", " + s + "!" (byte-wise, like concat3).
static void greet_with(greeter_plugin_string_t *ret,
                       const greeter_plugin_string_t *g,
                       const greeter_plugin_string_t *s) {
  size_t p = g->len, n = s->len;
  uint8_t *buf = malloc(p + 2 + n + 1);
  if (!buf) abort();
  memcpy(buf, g->ptr, p);
  memcpy(buf + p, ", ", 2);
  memcpy(buf + p + 2, s->ptr, n);
  buf[p + 2 + n] = '!';
  ret->ptr = buf;
  ret->len = p + 2 + n + 1;
}
#endif

// ---- lifecycle ------------------------------------------------------------

void exports_wasmplug_plugin_lifecycle_identity(
    exports_wasmplug_plugin_lifecycle_plugin_identity_t *ret) {
  // Post-return frees both strings: duplicate, don't `string_set` literals.
  greeter_plugin_string_dup(&ret->name, NAME);
  greeter_plugin_string_dup(&ret->version, VERSION);
}

// Returns true for `ok`; on false, `*err` (heap string) is the error.
bool exports_wasmplug_plugin_lifecycle_init(greeter_plugin_string_t *err) {
  (void)err;
  initialised = true;
  greeter_plugin_string_t msg;
  greeter_plugin_string_set(&msg, "init " NAME "@" VERSION);  // borrowed
  wasmplug_plugin_host_log(WASMPLUG_PLUGIN_TYPES_LEVEL_INFO, &msg);
  return true;
}

// ---- greeter --------------------------------------------------------------

void exports_wasmplug_plugin_greeter_welcome(greeter_plugin_string_t *name,
                                             greeter_plugin_string_t *ret) {
  require_init();
#ifdef WIT_1_1
  // 1.1: "{greeting}, {name}!" when the embedder has a `greeting` setting.
  greeter_plugin_string_t key, greeting;
  greeter_plugin_string_set(&key, "greeting");  // borrowed by the import
  if (wasmplug_plugin_config_get(&key, &greeting)) {
    greet_with(ret, &greeting, name);
    greeter_plugin_string_free(&greeting);  // the import's result is ours
    greeter_plugin_string_free(name);
    return;
  }
#endif
  concat3(ret, "Welcome, ", name, "!");
  greeter_plugin_string_free(name);  // we own the argument
}

void exports_wasmplug_plugin_greeter_hello(
    exports_wasmplug_plugin_greeter_user_t *who, greeter_plugin_string_t *ret) {
  require_init();
  concat3(ret, "Hello, ", &who->name, "!");
  exports_wasmplug_plugin_greeter_user_free(who);
}

uint32_t exports_wasmplug_plugin_greeter_count(void) {
  require_init();
  return ++counter;
}

// Returns true for `ok(*ret)`, false for `err(*err)`.
bool exports_wasmplug_plugin_greeter_birthday(
    exports_wasmplug_plugin_greeter_user_t *who,
    exports_wasmplug_plugin_greeter_user_t *ret, greeter_plugin_string_t *err) {
  require_init();
  if (who->name.len == 0) {
    exports_wasmplug_plugin_greeter_user_free(who);
    greeter_plugin_string_dup(err, "a user needs a name");
    return false;
  }
  ret->name = who->name;  // hand the argument's buffer on: post-return frees it
  ret->age = who->age == UINT32_MAX ? UINT32_MAX : who->age + 1;  // saturating
  return true;
}

#ifdef WIT_1_1
// New in 1.1.0.
void exports_wasmplug_plugin_greeter_farewell(greeter_plugin_string_t *name,
                                              greeter_plugin_string_t *ret) {
  require_init();
  concat3(ret, "Goodbye, ", name, "!");
  greeter_plugin_string_free(name);  // we own the argument
}
#endif
