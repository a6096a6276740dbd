'use strict';
// The server's own log events: the levels, the `ferrovia:log` diagnostics channel every
// event of the core (forwarded by the native module) and of the facade is published on,
// and the level below which events are dropped.

const diagnosticsChannel = require('node:diagnostics_channel');
const native = require('./native.js');

const LOG_LEVELS = ['off', 'error', 'warn', 'info', 'debug', 'trace'];
/** Every server log event is published here as { level, target, message, fields, line }. */
const logChannel = diagnosticsChannel.channel('ferrovia:log');

function publishLog(record) {
  const event = {
    level: record.level,
    target: record.target,
    message: record.message,
    fields: Object.fromEntries(record.fields),
    line: record.line,
  };
  if (logChannel.hasSubscribers) logChannel.publish(event);
  // Nobody listens: warnings and errors still reach stderr, as Python's last-resort
  // handler does for its loggers.
  else if (event.level === 'error' || event.level === 'warn') console.warn(`ferrovia ${event.level}: ${event.line}`);
}

let logLevel = 'warn';

/** Forwards the server's events at `level` and above ('warn' unless a server asked otherwise). */
function setLogLevel(level) {
  logLevel = level;
  native.forwardLogs(level, (record) => publishLog(record));
}

/** Publishes an event of the facade itself (a certificate reload) like the core's own. */
function logEvent(level, target, message, fields) {
  if (LOG_LEVELS.indexOf(level) > LOG_LEVELS.indexOf(logLevel)) return;
  const pairs = Object.entries(fields);
  const line = pairs.length ? `${message} ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}` : message;
  publishLog({ level, target, message, fields: pairs, line });
}

module.exports = { LOG_LEVELS, setLogLevel, logEvent };
