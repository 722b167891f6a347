"""Quality evaluations (`assistant eval ...`): results saved per problem, resumable."""
