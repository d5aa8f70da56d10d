/**
 * How an adapter becomes one `Store`: each domain is implemented by its own object (one file per
 * domain in the dialect's folder) and the adapter class copies their methods onto itself, so
 * callers keep one object while each domain stays a small file.
 */
import type { Store } from './types.js';

/** Everything a domain implements: the store minus what the adapter itself owns. */
export type StoreDomains = Omit<Store, 'kind' | 'close' | 'onAuditAppended'>;

/** A base class whose instances are typed as carrying every domain method; the subclass's constructor puts them there. */
export const DomainMethods = class {} as new () => StoreDomains;
