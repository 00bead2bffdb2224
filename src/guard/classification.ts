export type CommandClass = 'read' | 'write' | 'ddl' | 'dcl' | 'admin' | 'copy' | 'procedural' | 'unknown';
export interface Classification { class: CommandClass; classes: CommandClass[]; types: string[]; reads: string[]; writes: string[]; flags: string[]; functions: string[]; prepareName?: string; executeName?: string; reason?: string; }
