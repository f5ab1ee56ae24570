import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import type { XmppFederation } from './federation.ts';
import { LOGIN_REFUSED } from '../../shared/sasl/auth-limits.ts';

export interface XmppMonitoringProps {
  readonly apiId: string;
  readonly stageName: string;
  readonly connectFunction: lambda.IFunction;
  readonly streamFunction: lambda.IFunction;
  readonly roomFanoutFunction?: lambda.IFunction;
  readonly streamLogGroup: logs.ILogGroup;
  readonly inboundQueue: sqs.IQueue;
  readonly deadLetterQueue: sqs.IQueue;
  /** Delayed events (ends of XEP-0198 resumption windows) the stream Lambda failed repeatedly. */
  readonly timerDeadLetterQueue?: sqs.IQueue;
  /** Room fan-out jobs that failed five times. */
  readonly jobDeadLetterQueue?: sqs.IQueue;
  readonly table: dynamodb.ITable;
  readonly federation?: XmppFederation;
  /** Subscribe this address to the alarm topic. */
  readonly alarmEmail?: string;
  /** Create the CloudWatch dashboard. */
  readonly dashboard: boolean;
}

/** Namespace of the metrics this stack derives from logs. */
export const METRIC_NAMESPACE = 'Xmpp';

/**
 * Alarms (all to one SNS topic) and a dashboard.
 *
 * API Gateway has no metric for `@connections` calls made by the backend, so failures there are
 * seen through the stream Lambda: its errors, its ERROR-level log lines (a metric filter on the JSON
 * logs), and the dead-letter queue.
 */
export class XmppMonitoring extends Construct {
  readonly topic: sns.Topic;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly dashboard?: cloudwatch.Dashboard;

  constructor(scope: Construct, id: string, props: XmppMonitoringProps) {
    super(scope, id);
    this.topic = new sns.Topic(this, 'AlarmTopic', { displayName: 'XMPP service alarms', enforceSSL: true });
    if (props.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    const action = new cwActions.SnsAction(this.topic);
    const fiveMinutes = Duration.minutes(5);

    const alarm = (name: string, metric: cloudwatch.IMetric, threshold: number, description: string, options: Partial<cloudwatch.CreateAlarmOptions> = {}) => {
      const a = new cloudwatch.Alarm(this, name, {
        metric,
        threshold,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: description,
        ...options,
      });
      a.addAlarmAction(action);
      a.addOkAction(action);
      this.alarms.push(a);
      return a;
    };

    // Lambda
    const functions: Array<[string, lambda.IFunction]> = [['Connect', props.connectFunction], ['Stream', props.streamFunction]];
    if (props.roomFanoutFunction) functions.push(['RoomFanout', props.roomFanoutFunction]);
    for (const [name, fn] of functions) {
      alarm(`${name}Errors`, fn.metricErrors({ period: fiveMinutes, statistic: 'Sum' }), 1, `${name} Lambda: invocations failed`);
      alarm(`${name}Throttles`, fn.metricThrottles({ period: fiveMinutes, statistic: 'Sum' }), 1, `${name} Lambda: invocations throttled (concurrency limit)`);
    }
    const streamErrorLogs = new logs.MetricFilter(this, 'StreamErrorLogs', {
      logGroup: props.streamLogGroup,
      // Lambda's JSON log format writes console.error() / logger.error() with "level": "ERROR".
      filterPattern: logs.FilterPattern.stringValue('$.level', '=', 'ERROR'),
      metricNamespace: METRIC_NAMESPACE,
      metricName: 'StreamErrorLogs',
      metricValue: '1',
    });
    const streamErrorLogsMetric = streamErrorLogs.metric({ period: fiveMinutes, statistic: 'Sum' });
    alarm('StreamErrorLogsAlarm', streamErrorLogsMetric, 10, 'Stream Lambda: 10 or more ERROR log lines in 5 minutes (e.g. @connections or DynamoDB failures)');

    // Password guessing: each login refused by the brute-force limits logs one line (shared/sasl/auth-limits.ts).
    const refusedLogins = new logs.MetricFilter(this, 'RefusedLogins', {
      logGroup: props.streamLogGroup,
      filterPattern: logs.FilterPattern.stringValue('$.message', '=', LOGIN_REFUSED),
      metricNamespace: METRIC_NAMESPACE,
      metricName: 'RefusedLogins',
      metricValue: '1',
    });
    alarm('RefusedLoginsAlarm', refusedLogins.metric({ period: fiveMinutes, statistic: 'Sum' }), 20, 'Logins refused after too many failed attempts: 20 or more in 5 minutes (password guessing)');

    // Queues
    alarm('DeadLetters', props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: fiveMinutes, statistic: 'Maximum' }), 1, 'Frames the stream Lambda failed to process repeatedly are in the dead-letter queue');
    if (props.jobDeadLetterQueue) {
      alarm('JobDeadLetters', props.jobDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: fiveMinutes, statistic: 'Maximum' }), 1, 'Room fan-out jobs failed repeatedly: some occupants missed room messages (they are in the room archive)');
    }
    if (props.timerDeadLetterQueue) {
      alarm('TimerDeadLetters', props.timerDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: fiveMinutes, statistic: 'Maximum' }), 1, 'Ends of resumption windows failed repeatedly: hibernated sessions stay available until their items expire');
    }
    alarm('InboundBacklog', props.inboundQueue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: 'Maximum' }), 30, 'Frames wait more than 30 s in the inbound FIFO queue', { evaluationPeriods: 3 });

    // API Gateway (WebSocket metrics exist per API and stage)
    const apiMetric = (metricName: string) =>
      new cloudwatch.Metric({
        namespace: 'AWS/ApiGateway',
        metricName,
        dimensionsMap: { ApiId: props.apiId, Stage: props.stageName },
        period: fiveMinutes,
        statistic: 'Sum',
      });
    alarm('ApiIntegrationErrors', apiMetric('IntegrationError'), 5, 'API Gateway could not hand frames to SQS or the connect Lambda (frames lost)');
    alarm('ApiExecutionErrors', apiMetric('ExecutionError'), 5, 'API Gateway execution errors');

    // DynamoDB
    alarm('TableThrottles', new cloudwatch.MathExpression({
      expression: 'r + w',
      usingMetrics: {
        r: props.table.metric('ReadThrottleEvents', { period: fiveMinutes, statistic: 'Sum' }),
        w: props.table.metric('WriteThrottleEvents', { period: fiveMinutes, statistic: 'Sum' }),
      },
      label: 'Throttle events',
      period: fiveMinutes,
    }), 1, 'DynamoDB throttled reads or writes');
    alarm('TableSystemErrors', props.table.metric('SystemErrors', { period: fiveMinutes, statistic: 'Sum' }), 1, 'DynamoDB system errors');

    // Federation
    const fed = props.federation;
    if (fed) {
      // One port is enough: every listener targets the same task.
      const [port, tg] = Object.entries(fed.targetGroups)[0]!;
      alarm('FederationUnhealthy', tg.metrics.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum' }), 1, `No healthy federation task behind the NLB (port ${port}) for 5 minutes`, {
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 5,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
      alarm('S2sDeadLetters', fed.s2sDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: fiveMinutes, statistic: 'Maximum' }), 1, 'Outbound server-to-server stanzas failed repeatedly');
      alarm('S2sBacklog', fed.s2sQueue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: 'Maximum' }), 120, 'Outbound server-to-server stanzas wait more than 2 minutes', { evaluationPeriods: 3 });
    }

    if (props.dashboard) {
      const d = new cloudwatch.Dashboard(this, 'Dashboard', { defaultInterval: Duration.hours(3) });
      const fn = (f: lambda.IFunction) => [
        f.metricInvocations({ statistic: 'Sum', period: Duration.minutes(1) }),
        f.metricErrors({ statistic: 'Sum', period: Duration.minutes(1) }),
        f.metricThrottles({ statistic: 'Sum', period: Duration.minutes(1) }),
      ];
      d.addWidgets(
        new cloudwatch.GraphWidget({
          title: 'WebSocket API',
          left: ['ConnectCount', 'MessageCount'].map((m) => apiMetric(m).with({ period: Duration.minutes(1) })),
          right: ['IntegrationError', 'ClientError', 'ExecutionError'].map((m) => apiMetric(m).with({ period: Duration.minutes(1) })),
          width: 12,
        }),
        new cloudwatch.GraphWidget({
          title: 'API -> SQS -> stream latency',
          left: [apiMetric('IntegrationLatency').with({ statistic: 'p99', period: Duration.minutes(1) })],
          right: [props.inboundQueue.metricApproximateAgeOfOldestMessage({ period: Duration.minutes(1), statistic: 'Maximum' })],
          width: 12,
        }),
      );
      d.addWidgets(
        new cloudwatch.GraphWidget({ title: 'Stream Lambda', left: fn(props.streamFunction), right: [streamErrorLogsMetric], width: 8 }),
        new cloudwatch.GraphWidget({
          title: 'Stream Lambda duration / concurrency',
          left: ['p50', 'p99'].map((s) => props.streamFunction.metricDuration({ statistic: s, period: Duration.minutes(1) })),
          right: [props.streamFunction.metric('ConcurrentExecutions', { statistic: 'Maximum', period: Duration.minutes(1) })],
          width: 8,
        }),
        new cloudwatch.GraphWidget({ title: 'Connect Lambda', left: fn(props.connectFunction), width: 8 }),
      );
      d.addWidgets(
        new cloudwatch.GraphWidget({
          title: 'Queues',
          left: [
            props.inboundQueue.metricNumberOfMessagesSent({ period: Duration.minutes(1), statistic: 'Sum' }),
            props.inboundQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
          ],
          right: [props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' })],
          width: 12,
        }),
        new cloudwatch.GraphWidget({
          title: 'DynamoDB',
          left: [
            props.table.metricConsumedReadCapacityUnits({ period: Duration.minutes(1), statistic: 'Sum' }),
            props.table.metricConsumedWriteCapacityUnits({ period: Duration.minutes(1), statistic: 'Sum' }),
          ],
          right: ['ReadThrottleEvents', 'WriteThrottleEvents', 'SystemErrors'].map((m) => props.table.metric(m, { period: Duration.minutes(1), statistic: 'Sum' })),
          width: 12,
        }),
      );
      if (fed) {
        const firstTg = Object.values(fed.targetGroups)[0];
        d.addWidgets(
          new cloudwatch.GraphWidget({
            title: 'Federation task',
            left: [fed.service.metricCpuUtilization({ period: Duration.minutes(1) }), fed.service.metricMemoryUtilization({ period: Duration.minutes(1) })],
            right: firstTg ? [firstTg.metrics.healthyHostCount({ period: Duration.minutes(1), statistic: 'Minimum' })] : [],
            width: 12,
          }),
          new cloudwatch.GraphWidget({
            title: 'Federation traffic',
            left: [fed.loadBalancer.metrics.activeFlowCount({ period: Duration.minutes(1) }), fed.loadBalancer.metrics.newFlowCount({ period: Duration.minutes(1) })],
            right: [
              fed.s2sQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
              fed.s2sDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(1), statistic: 'Maximum' }),
            ],
            width: 12,
          }),
        );
      }
      this.dashboard = d;
    }
  }
}
