/**
 * The room's answer to losing a race: every room write is conditional on the version it read, and
 * a write that loses to a concurrent change of the same room throws LostRace, which the operation
 * re-runs or the service (service.ts) answers with busy(). Its own file because every part of
 * the service throws or catches it.
 */
import { StanzaError } from '../../errors.ts';

/** The answer when concurrent changes to a room kept winning: try again. */
export function busy(): StanzaError {
  return new StanzaError('resource-constraint', 'the room changed meanwhile; try again');
}

/** A conditional write lost to a concurrent change of the same room: the operation is re-run or answered with busy(). */
export class LostRace extends Error {
  constructor() {
    super('lost a race with a concurrent change');
  }
}
