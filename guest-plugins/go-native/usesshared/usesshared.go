// A plugin that links gonative/shared (build.sh builds it against two
// versions of that package).
package main

import "gonative/shared"

func Welcome(name string) string { return "Welcome, " + name + "! (shared@" + shared.Version + ")" }

func Count() int { return shared.Next() }
