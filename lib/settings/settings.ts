/**
 * Settings of the Console and the Daemon, in one import: the schema
 * (`schema.ts`), the comment-keeping edit (`edit.ts`), the watcher
 * (`watch.ts`) and the paths beside a settings file (`paths.ts`). New code
 * imports from those files; this one re-exports them.
 *
 * @module
 */

export {
  type ConsoleSettings,
  type DaemonSettings,
  DEFAULT_CONSOLE_SETTINGS,
  DEFAULT_DAEMON_SETTINGS,
  loadConsoleSettings,
  loadDaemonSettings,
  type LoadedSettings,
  MAX_DELAY_MS,
  parseConsoleSettings,
  parseDaemonSettings,
} from "./schema.ts";
export {
  defaultSettingsFile,
  type DefaultSettingsFileOptions,
  readSettingsText,
  readTokenFile,
  type SettingsPaths,
  settingsPaths,
} from "./paths.ts";
export {
  applyConsoleEdits,
  type ApplyConsoleEditsOptions,
  type ConsoleEdit,
  type EditedSettings,
  rememberConsole,
  updateConsoleSettings,
} from "./edit.ts";
export { watchSettings, type WatchSettingsOptions } from "./watch.ts";
