/**
 * Invoking Lambda handlers as the Node.js runtime does: a fresh Context per invocation, async or
 * callback-style handlers, and the function's timeout (a timed-out invocation counts as failed).
 * Used for both the $connect handler and the stream handler.
 */
import { randomUUID } from 'node:crypto';
import type { Callback, Context } from 'aws-lambda';
import { LOCAL_REGION } from '../sqs-event.ts';

function lambdaContext(functionName: string, timeoutMs: number): Context {
  const start = Date.now();
  const awsRequestId = randomUUID();
  const noop = () => {};
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${LOCAL_REGION}:000000000000:function:${functionName}`,
    memoryLimitInMB: '1024',
    awsRequestId,
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: `local/[$LATEST]${awsRequestId.replace(/-/g, '')}`,
    getRemainingTimeInMillis: () => Math.max(0, start + timeoutMs - Date.now()),
    done: noop,
    fail: noop,
    succeed: noop,
  };
}

/**
 * Calls a Lambda handler the way the Node.js runtime does: an async handler's promise, or a
 * callback-style handler's callback, whichever settles first.
 */
export function callHandler<E, R>(
  handler: (event: E, context: Context, callback: Callback<R>) => unknown,
  event: E,
  context: Context,
): Promise<R | undefined> {
  return new Promise<R | undefined>((resolve, reject) => {
    let settled = false;
    const finish = (err: unknown, result?: R) => {
      if (settled) return;
      settled = true;
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve(result);
    };
    try {
      const returned = handler(event, context, (err, result) => finish(err, result));
      if (returned && typeof (returned as Promise<R>).then === 'function') {
        (returned as Promise<R>).then(
          (result) => finish(undefined, result),
          (err) => finish(err ?? new Error('handler rejected')),
        );
      } else if (handler.length < 3) {
        finish(undefined, returned as R);
      }
    } catch (err) {
      finish(err);
    }
  });
}

/** callHandler with a fresh Lambda context and the function's timeout (a timeout is a failure). */
export function invokeLambda<E, R>(
  handler: (event: E, context: Context, callback: Callback<R>) => unknown,
  event: E,
  functionName: string,
  timeoutMs: number,
): Promise<R | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${functionName}: Task timed out after ${(timeoutMs / 1000).toFixed(2)} seconds`)),
      timeoutMs,
    );
  });
  return Promise.race([callHandler(handler, event, lambdaContext(functionName, timeoutMs)), timeout]).finally(() =>
    clearTimeout(timer),
  );
}
