//! Read-only AWS observations for `gdfwd doctor`: the Organization's accounts, the forwarder
//! stack and its resources (CloudFormation), rules and their targets (EventBridge), queue depths
//! (SQS) and the age of their oldest message (CloudWatch), and the relay StackSet's instances,
//! implementing the doctor's [`AwsInspector`] port.
//!
//! Every call goes through the SDK (its standard retry mode retries throttling) with the client's
//! region set per call, so one inspector reads every region. Answers that mean "there is no
//! such thing" become `Ok(None)` (a gap the doctor names); refusals become
//! [`ObserveError::Denied`] naming the IAM action (the check is `unknown`); anything else is
//! [`ObserveError::Failed`].

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_cloudformation::types::StackInstanceSummary;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use gdfwd_doctor::{
    AwsInspector, Obs, ObserveError, OrgAccount, QueueState, Rule, Stack, StackInstance,
    StackResource,
};

/// Error codes AWS answers a missing permission with, across these services' protocols.
const DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "AWSOrganizationsNotInUseException",
];

/// Reads the Organization and the pipeline's resources with one SDK configuration.
#[derive(Debug, Clone)]
pub struct AwsInspect {
    sdk: SdkConfig,
}

impl AwsInspect {
    pub fn new(sdk: &SdkConfig) -> Self {
        Self { sdk: sdk.clone() }
    }

    fn cfn(&self, region: &str) -> aws_sdk_cloudformation::Client {
        let conf = aws_sdk_cloudformation::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        aws_sdk_cloudformation::Client::from_conf(conf)
    }

    fn events(&self, region: &str) -> aws_sdk_eventbridge::Client {
        let conf = aws_sdk_eventbridge::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        aws_sdk_eventbridge::Client::from_conf(conf)
    }

    fn sqs(&self, region: &str) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }
}

/// The observation error for a failed call of `action` (`service:Operation`).
fn observe_error<E>(e: &E, action: &str) -> ObserveError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = gdfwd_aws_error::describe(e);
    if gdfwd_aws_error::has_code(e, DENIED) {
        ObserveError::Denied {
            permission: action.to_owned(),
            message,
        }
    } else {
        ObserveError::Failed {
            operation: action.to_owned(),
            message,
        }
    }
}

fn is_queue_missing<E: ProvideErrorMetadata>(e: &E) -> bool {
    gdfwd_aws_error::has_code(
        e,
        &[
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        ],
    )
}

#[async_trait]
impl AwsInspector for AwsInspect {
    async fn organization_accounts(&self) -> Obs<Vec<OrgAccount>> {
        let org = aws_sdk_organizations::Client::new(&self.sdk);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = org
                .list_accounts()
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| observe_error(&e, "organizations:ListAccounts"))?;
            for a in page.accounts() {
                let Some(id) = a.id() else { continue };
                out.push(OrgAccount {
                    id: id.to_owned(),
                    name: a.name().map(str::to_owned),
                    email: a.email().map(str::to_owned),
                    #[allow(deprecated)]
                    status: a
                        .status()
                        .map_or_else(|| "ACTIVE".to_owned(), |s| s.as_str().to_owned()),
                });
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn stack(&self, region: &str, name: &str) -> Obs<Option<Stack>> {
        let cfn = self.cfn(region);
        let described = match cfn.describe_stacks().stack_name(name).send().await {
            Ok(d) => d,
            // CloudFormation answers a missing stack with a ValidationError.
            Err(e)
                if gdfwd_aws_error::has_code(&e, &["ValidationError"])
                    && gdfwd_aws_error::describe(&e).contains("does not exist") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(observe_error(&e, "cloudformation:DescribeStacks")),
        };
        let Some(stack) = described.stacks().first() else {
            return Ok(None);
        };
        let status = stack
            .stack_status()
            .map_or_else(String::new, |s| s.as_str().to_owned());
        let mut resources = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = cfn
                .list_stack_resources()
                .stack_name(name)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| observe_error(&e, "cloudformation:ListStackResources"))?;
            for r in page.stack_resource_summaries() {
                resources.push(StackResource {
                    logical_id: r.logical_resource_id().unwrap_or_default().to_owned(),
                    resource_type: r.resource_type().unwrap_or_default().to_owned(),
                    physical_id: r.physical_resource_id().map(str::to_owned),
                    status: r
                        .resource_status()
                        .map_or_else(String::new, |s| s.as_str().to_owned()),
                });
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(Some(Stack { status, resources }))
    }

    async fn rule(&self, region: &str, bus: &str, name: &str) -> Obs<Option<Rule>> {
        let events = self.events(region);
        let described = match events
            .describe_rule()
            .name(name)
            .event_bus_name(bus)
            .send()
            .await
        {
            Ok(d) => d,
            Err(e) if gdfwd_aws_error::has_code(&e, &["ResourceNotFoundException"]) => {
                return Ok(None);
            }
            Err(e) => return Err(observe_error(&e, "events:DescribeRule")),
        };
        let enabled = described
            .state()
            .is_some_and(|s| s.as_str().eq_ignore_ascii_case("ENABLED"));
        let targets = events
            .list_targets_by_rule()
            .rule(name)
            .event_bus_name(bus)
            .send()
            .await
            .map_err(|e| observe_error(&e, "events:ListTargetsByRule"))?;
        Ok(Some(Rule {
            name: name.to_owned(),
            bus: bus.to_owned(),
            enabled,
            target_arns: targets
                .targets()
                .iter()
                .map(|t| t.arn().to_owned())
                .collect(),
        }))
    }

    async fn queue(&self, region: &str, queue: &str) -> Obs<Option<QueueState>> {
        let sqs = self.sqs(region);
        let url = if queue.starts_with("https://") || queue.starts_with("http://") {
            queue.to_owned()
        } else {
            match sqs.get_queue_url().queue_name(queue).send().await {
                Ok(o) => o.queue_url().unwrap_or_default().to_owned(),
                Err(e) if is_queue_missing(&e) => return Ok(None),
                Err(e) => return Err(observe_error(&e, "sqs:GetQueueUrl")),
            }
        };
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let attrs = match sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(A::QueueArn)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if is_queue_missing(&e) => return Ok(None),
            Err(e) => return Err(observe_error(&e, "sqs:GetQueueAttributes")),
        };
        let map = attrs.attributes();
        let num = |k: &A| {
            map.and_then(|m| m.get(k))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Some(QueueState {
            arn: map.and_then(|m| m.get(&A::QueueArn)).cloned(),
            visible: num(&A::ApproximateNumberOfMessages),
            in_flight: num(&A::ApproximateNumberOfMessagesNotVisible),
            url,
            oldest_age: None,
        }))
    }

    async fn oldest_message_age(&self, region: &str, queue_name: &str) -> Obs<Option<u64>> {
        use aws_sdk_cloudwatch::types::{Dimension, Statistic};
        let conf = aws_sdk_cloudwatch::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(region.to_owned()))
            .build();
        let now = std::time::SystemTime::now();
        let start = now - std::time::Duration::from_secs(15 * 60);
        let out = aws_sdk_cloudwatch::Client::from_conf(conf)
            .get_metric_statistics()
            .namespace("AWS/SQS")
            .metric_name("ApproximateAgeOfOldestMessage")
            .dimensions(
                Dimension::builder()
                    .name("QueueName")
                    .value(queue_name)
                    .build(),
            )
            .start_time(aws_smithy_types::DateTime::from(start))
            .end_time(aws_smithy_types::DateTime::from(now))
            .period(300)
            .statistics(Statistic::Maximum)
            .send()
            .await
            .map_err(|e| observe_error(&e, "cloudwatch:GetMetricStatistics"))?;
        Ok(out
            .datapoints()
            .iter()
            .filter_map(|d| d.maximum())
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            })
            .map(|v| v.max(0.0) as u64))
    }

    async fn stack_instances(
        &self,
        region: &str,
        stack_set: &str,
    ) -> Obs<Option<Vec<StackInstance>>> {
        let cfn = self.cfn(region);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = match cfn
                .list_stack_instances()
                .stack_set_name(stack_set)
                .set_next_token(token.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if gdfwd_aws_error::has_code(&e, &["StackSetNotFoundException"]) => {
                    return Ok(None);
                }
                Err(e) => return Err(observe_error(&e, "cloudformation:ListStackInstances")),
            };
            out.extend(page.summaries().iter().map(instance));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(Some(out)),
            }
        }
    }
}

fn instance(s: &StackInstanceSummary) -> StackInstance {
    StackInstance {
        account: s.account().unwrap_or_default().to_owned(),
        region: s.region().unwrap_or_default().to_owned(),
        status: s
            .status()
            .map_or_else(String::new, |st| st.as_str().to_owned()),
        reason: s.status_reason().map(str::to_owned),
    }
}
